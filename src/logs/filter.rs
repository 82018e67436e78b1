//! CloudWatch Logs filter patterns, the subset that makes sense for unstructured text.

use super::LogError;

/// The supported subset of CloudWatch Logs filter patterns, for unstructured text:
///
/// - `term`: the message contains `term` (case-sensitive substring). Several terms must all
///   appear, in any order.
/// - `"a quoted phrase"`: contains the phrase, spaces included; `\"` and `\\` escape inside.
/// - `-term` / `-"phrase"`: must NOT contain it.
/// - `?term` / `?"phrase"`: at least one of the `?` terms must appear.
/// - empty (or only spaces): every event matches.
///
/// JSON (`{ $.x = ... }`), space-delimited (`[a, b]`) and regular-expression (`%...%`) patterns
/// are refused with `InvalidParameterException`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterPattern {
    all: Vec<String>,
    none: Vec<String>,
    any: Vec<String>,
}

impl FilterPattern {
    pub fn parse(pattern: &str) -> Result<FilterPattern, LogError> {
        let trimmed = pattern.trim();
        if let Some(c) = trimmed.chars().next()
            && matches!(c, '{' | '[' | '%')
        {
            return Err(LogError::invalid(format!(
                "filter pattern {pattern:?}: Flotilla supports only terms, \"quoted phrases\", \
                 -exclusions and ?alternatives (no JSON, space-delimited or regex patterns)"
            )));
        }
        let mut out = FilterPattern::default();
        let mut chars = trimmed.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&first) = chars.peek() else {
                break;
            };
            let kind = match first {
                '-' | '?' => {
                    chars.next();
                    first
                }
                _ => ' ',
            };
            let mut term = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some(n) => term.push(n),
                            None => break,
                        },
                        c => term.push(c),
                    }
                }
                if !closed {
                    return Err(LogError::invalid(format!(
                        "filter pattern {pattern:?}: unterminated quoted phrase"
                    )));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    term.push(c);
                    chars.next();
                }
            }
            if term.is_empty() {
                // A lone `-`/`?` or `""` constrains nothing.
                continue;
            }
            match kind {
                '-' => out.none.push(term),
                '?' => out.any.push(term),
                _ => out.all.push(term),
            }
        }
        Ok(out)
    }

    pub fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| message.contains(t.as_str()))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| message.contains(t.as_str())))
    }
}
