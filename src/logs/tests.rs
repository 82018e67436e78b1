use super::*;

fn store() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LogStore::open(dir.path().join("logs")).expect("open");
    (dir, store)
}

const S: &str = "def/default/task-1";

fn fill(store: &LogStore, n: i64) {
    let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
    for i in 0..n {
        w.append_at(1_000 + i, &format!("line {i}"))
            .expect("append");
    }
}

fn msgs(p: &LogEventsPage) -> Vec<String> {
    p.events.iter().map(|e| e.message.clone()).collect()
}

fn get(store: &LogStore, q: GetLogEvents) -> LogEventsPage {
    store.get_log_events(JOB_LOG_GROUP, S, &q).expect("get")
}

#[test]
fn forward_pagination_ends_with_the_same_token() {
    let (_d, store) = store();
    fill(&store, 25);
    let mut token = None;
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 20, "no end of stream");
        let page = get(
            &store,
            GetLogEvents {
                next_token: token.clone(),
                limit: Some(10),
                start_from_head: Some(true),
                ..Default::default()
            },
        );
        seen.extend(msgs(&page));
        if token.as_deref() == Some(page.next_forward_token.as_str()) {
            assert!(page.events.is_empty());
            break;
        }
        token = Some(page.next_forward_token);
    }
    let want: Vec<String> = (0..25).map(|i| format!("line {i}")).collect();
    assert_eq!(seen, want);
    // 10 + 10 + 5, then the empty call that returns the same token.
    assert_eq!(calls, 4);
    // New events after the end are picked up from the end token.
    let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
    w.append_at(5_000, "late").expect("append");
    let page = get(
        &store,
        GetLogEvents {
            next_token: token,
            ..Default::default()
        },
    );
    assert_eq!(msgs(&page), vec!["late"]);
}

#[test]
fn default_read_returns_the_newest_and_pages_backward() {
    let (_d, store) = store();
    fill(&store, 25);
    let page = get(
        &store,
        GetLogEvents {
            limit: Some(10),
            ..Default::default()
        },
    );
    let want: Vec<String> = (15..25).map(|i| format!("line {i}")).collect();
    assert_eq!(msgs(&page), want);
    // Forward from the newest page: nothing yet, and the token says so.
    let fwd = get(
        &store,
        GetLogEvents {
            next_token: Some(page.next_forward_token.clone()),
            ..Default::default()
        },
    );
    assert!(fwd.events.is_empty());
    assert_eq!(fwd.next_forward_token, page.next_forward_token);
    let mut token = page.next_backward_token;
    let mut older = Vec::new();
    loop {
        let p = get(
            &store,
            GetLogEvents {
                next_token: Some(token.clone()),
                limit: Some(10),
                ..Default::default()
            },
        );
        if p.next_backward_token == token {
            assert!(p.events.is_empty());
            break;
        }
        let mut m = msgs(&p);
        m.extend(older);
        older = m;
        token = p.next_backward_token;
    }
    let want: Vec<String> = (0..15).map(|i| format!("line {i}")).collect();
    assert_eq!(older, want);
}

#[test]
fn time_window_is_start_inclusive_end_exclusive() {
    let (_d, store) = store();
    fill(&store, 25);
    let page = get(
        &store,
        GetLogEvents {
            start_time: Some(1_005),
            end_time: Some(1_008),
            start_from_head: Some(true),
            ..Default::default()
        },
    );
    assert_eq!(msgs(&page), vec!["line 5", "line 6", "line 7"]);
    let page = get(
        &store,
        GetLogEvents {
            start_time: Some(1_005),
            end_time: Some(1_008),
            ..Default::default()
        },
    );
    assert_eq!(msgs(&page), vec!["line 5", "line 6", "line 7"]);
    let err = store
        .get_log_events(
            JOB_LOG_GROUP,
            S,
            &GetLogEvents {
                start_time: Some(9),
                end_time: Some(1),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.error_type(), "InvalidParameterException");
}

#[test]
fn newlines_and_backslashes_round_trip() {
    let (_d, store) = store();
    let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
    let tricky = "a\nb\\nc\r\\\\ end \\";
    w.append_at(1, tricky).expect("append");
    w.append_at(2, "").expect("append");
    w.append_at(3, "naïve ✓").expect("append");
    let page = get(
        &store,
        GetLogEvents {
            start_from_head: Some(true),
            ..Default::default()
        },
    );
    assert_eq!(msgs(&page), vec![tricky, "", "naïve ✓"]);
    // One line per event on disk.
    let text = fs::read_to_string(store.stream_path(JOB_LOG_GROUP, S)).expect("read");
    assert_eq!(text.lines().count(), 4);
}

#[test]
fn partial_last_line_is_invisible() {
    let (_d, store) = store();
    fill(&store, 2);
    let path = store.stream_path(JOB_LOG_GROUP, S);
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(b"3000 3000 half a li").expect("write");
    let page = get(
        &store,
        GetLogEvents {
            start_from_head: Some(true),
            ..Default::default()
        },
    );
    assert_eq!(msgs(&page), vec!["line 0", "line 1"]);
    f.write_all(b"ne\n").expect("write");
    let page2 = get(
        &store,
        GetLogEvents {
            next_token: Some(page.next_forward_token),
            ..Default::default()
        },
    );
    assert_eq!(msgs(&page2), vec!["half a line"]);
}

#[test]
fn unknown_stream_group_and_bad_tokens() {
    let (_d, store) = store();
    fill(&store, 3);
    let e = store
        .get_log_events(JOB_LOG_GROUP, "nope", &GetLogEvents::default())
        .unwrap_err();
    assert_eq!(e.error_type(), "ResourceNotFoundException");
    assert!(e.to_string().contains("log stream"), "{e}");
    let e = store
        .get_log_events("/no/group", S, &GetLogEvents::default())
        .unwrap_err();
    assert_eq!(e.error_type(), "ResourceNotFoundException");
    assert!(e.to_string().contains("log group"), "{e}");
    for bad in ["x", "f/abc", "f/1", "q/0", "f/99999999", "b/"] {
        let e = store
            .get_log_events(
                JOB_LOG_GROUP,
                S,
                &GetLogEvents {
                    next_token: Some(bad.into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.error_type(), "InvalidParameterException", "{bad}");
    }
    for limit in [0, 10_001, -1] {
        let e = store
            .get_log_events(
                JOB_LOG_GROUP,
                S,
                &GetLogEvents {
                    limit: Some(limit),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.error_type(), "InvalidParameterException", "{limit}");
    }
}

#[test]
fn one_megabyte_caps_a_page() {
    let (_d, store) = store();
    let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
    let big = "x".repeat(100 * 1024);
    for i in 0..15 {
        w.append_at(i, &big).expect("append");
    }
    let page = get(
        &store,
        GetLogEvents {
            start_from_head: Some(true),
            ..Default::default()
        },
    );
    // 10 × (100 KiB + 26) fits in 1 MiB; 11 does not.
    assert_eq!(page.events.len(), 10);
    let rest = get(
        &store,
        GetLogEvents {
            next_token: Some(page.next_forward_token),
            ..Default::default()
        },
    );
    assert_eq!(rest.events.len(), 5);
}

#[test]
fn long_messages_are_split() {
    let (_d, store) = store();
    let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
    let long = "é".repeat(MAX_MESSAGE_BYTES); // two bytes each
    w.append_at(1, &long).expect("append");
    let page = get(
        &store,
        GetLogEvents {
            start_from_head: Some(true),
            ..Default::default()
        },
    );
    assert_eq!(page.events.len(), 2);
    assert!(
        page.events
            .iter()
            .all(|e| e.message.len() <= MAX_MESSAGE_BYTES)
    );
    let joined: String = page.events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(joined, long);
}

#[test]
fn filter_patterns() {
    let p = FilterPattern::parse("ERROR \"disk full\" -ignored ?a1 ?b2").expect("parse");
    assert!(p.matches("ERROR: disk full on a1"));
    assert!(!p.matches("ERROR: disk  full on a1"));
    assert!(!p.matches("ERROR: disk full on a1 (ignored)"));
    assert!(!p.matches("ERROR: disk full on c3"));
    assert!(!p.matches("error: disk full on a1"));
    assert!(FilterPattern::parse("").expect("empty").matches("anything"));
    assert!(FilterPattern::parse("  ").expect("blank").matches(""));
    let q = FilterPattern::parse(r#""say \"hi\"""#).expect("escaped quote");
    assert!(q.matches(r#"they say "hi" there"#));
    for bad in ["{ $.level = \"x\" }", "[ip, user]", "%ERR.*%", "\"open"] {
        let e = FilterPattern::parse(bad).unwrap_err();
        assert_eq!(e.error_type(), "InvalidParameterException", "{bad}");
    }
}

#[test]
fn filter_across_streams_with_tokens() {
    let (_d, store) = store();
    for s in ["job/default/a", "job/default/b", "other/default/c"] {
        let w = store.writer(JOB_LOG_GROUP, s).expect("writer");
        for i in 0..5 {
            let kind = if i % 2 == 0 { "even" } else { "odd" };
            w.append_at(100 + i, &format!("{s} {kind} {i}"))
                .expect("append");
        }
    }
    let q = |token: Option<String>| FilterLogEvents {
        stream_prefix: Some("job/".into()),
        filter_pattern: Some("even".into()),
        next_token: token,
        limit: Some(2),
        ..Default::default()
    };
    let mut token = None;
    let mut all = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..10 {
        let page = store
            .filter_log_events(JOB_LOG_GROUP, &q(token))
            .expect("filter");
        for e in &page.events {
            assert!(ids.insert(e.event_id.clone()), "duplicate event id");
            all.push(format!("{}|{}", e.log_stream_name, e.message));
        }
        assert!(!page.searched_log_streams.is_empty());
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    assert!(token.is_none());
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(
        all.iter()
            .all(|m| m.starts_with("job/") && m.contains("even"))
    );
    assert!(all[0].starts_with("job/default/a|"));
    // Named streams, a time window, and the group-wide default.
    let page = store
        .filter_log_events(
            JOB_LOG_GROUP,
            &FilterLogEvents {
                stream_names: Some(vec!["other/default/c".into()]),
                start_time: Some(103),
                ..Default::default()
            },
        )
        .expect("filter");
    assert_eq!(page.events.len(), 2);
    assert_eq!(
        page.searched_log_streams,
        vec![SearchedStream {
            log_stream_name: "other/default/c".into(),
            searched_completely: true
        }]
    );
    assert!(page.next_token.is_none());
    let page = store
        .filter_log_events(JOB_LOG_GROUP, &FilterLogEvents::default())
        .expect("filter");
    assert_eq!(page.events.len(), 15);
    let e = store
        .filter_log_events(
            JOB_LOG_GROUP,
            &FilterLogEvents {
                stream_names: Some(vec!["missing".into()]),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.error_type(), "ResourceNotFoundException");
    let e = store
        .filter_log_events(
            JOB_LOG_GROUP,
            &FilterLogEvents {
                stream_names: Some(vec!["a".into()]),
                stream_prefix: Some("a".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.error_type(), "InvalidParameterException");
}

#[test]
fn odd_and_long_names_map_to_safe_files() {
    let (_d, store) = store();
    let long = format!("{}/default/{}", "d".repeat(300), "%é/..");
    for name in ["../../etc/passwd", ".hidden", "a b/c~d", long.as_str()] {
        let w = store.writer(JOB_LOG_GROUP, name).expect("writer");
        w.append_at(1, name).expect("append");
        let path = store.stream_path(JOB_LOG_GROUP, name);
        assert!(path.starts_with(store.root()), "{path:?}");
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .expect("file name");
        assert!(!file.starts_with('.') && !file.contains('/') && file.len() <= 255);
        let page = store
            .get_log_events(JOB_LOG_GROUP, name, &GetLogEvents::default())
            .expect("get");
        assert_eq!(page.events[0].message, name);
    }
    let page = store
        .describe_log_streams(
            JOB_LOG_GROUP,
            &DescribeStreams {
                prefix: Some("ddd".into()),
                ..Default::default()
            },
        )
        .expect("describe");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].name, long);
    assert!(store.writer(JOB_LOG_GROUP, "a:b").is_err());
}

#[test]
fn describe_streams_and_groups() {
    let (_d, store) = store();
    for (i, s) in ["b", "a", "c"].iter().enumerate() {
        let w = store.writer(JOB_LOG_GROUP, s).expect("writer");
        w.append_at(10 - i as i64, "x").expect("append");
    }
    let page = store
        .describe_log_streams(
            JOB_LOG_GROUP,
            &DescribeStreams {
                limit: Some(2),
                ..Default::default()
            },
        )
        .expect("describe");
    let names: Vec<_> = page.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
    assert_eq!(page.items[0].last_event_timestamp, Some(9));
    let next = store
        .describe_log_streams(
            JOB_LOG_GROUP,
            &DescribeStreams {
                next_token: page.next_token,
                ..Default::default()
            },
        )
        .expect("describe");
    assert_eq!(next.items.len(), 1);
    assert!(next.next_token.is_none());
    let by_time = store
        .describe_log_streams(
            JOB_LOG_GROUP,
            &DescribeStreams {
                order_by: StreamOrder::LastEventTime,
                descending: true,
                ..Default::default()
            },
        )
        .expect("describe");
    let names: Vec<_> = by_time.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["b", "a", "c"]);
    store.ensure_group("/other").expect("group");
    let groups = store
        .describe_log_groups(&DescribeGroups::default())
        .expect("groups");
    let names: Vec<_> = groups.items.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, vec![JOB_LOG_GROUP, "/other"]);
    assert!(groups.items[0].stored_bytes > 0);
}

#[test]
fn tail_reports_the_newest_timestamp_and_its_messages() {
    let (_d, store) = store();
    assert_eq!(store.tail(JOB_LOG_GROUP, S).expect("tail"), None);
    let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
    w.append_batch(&[(5, "a"), (7, "b"), (7, "c")])
        .expect("append");
    assert_eq!(
        store.tail(JOB_LOG_GROUP, S).expect("tail"),
        Some((7, vec!["b".to_string(), "c".to_string()]))
    );
}

#[track_caller]
fn invalid<T>(r: Result<T, LogError>) {
    let e = r.map(|_| ()).unwrap_err();
    assert_eq!(e.error_type(), "InvalidParameterException", "{e}");
}

#[test]
fn tokens_belong_to_their_stream_and_listing() {
    let (_d, store) = store();
    fill(&store, 6);
    let other = "def/default/task-2";
    let w = store.writer(JOB_LOG_GROUP, other).expect("writer");
    for i in 0..6 {
        w.append_at(1_000 + i, &format!("line {i}"))
            .expect("append");
    }
    // Both streams hold the same lines, so the offset is a line boundary in both: only the
    // binding tells them apart.
    let page = get(
        &store,
        GetLogEvents {
            limit: Some(2),
            start_from_head: Some(true),
            ..Default::default()
        },
    );
    let token = |t: &str| GetLogEvents {
        next_token: Some(t.to_string()),
        ..Default::default()
    };
    invalid(store.get_log_events(JOB_LOG_GROUP, other, &token(&page.next_forward_token)));
    invalid(store.get_log_events(JOB_LOG_GROUP, other, &token(&page.next_backward_token)));
    // In its own stream it continues; an offset moved off a line boundary is still refused.
    assert_eq!(msgs(&get(&store, token(&page.next_forward_token))).len(), 4);
    let (head, pos) = page.next_forward_token.rsplit_once('/').unwrap();
    let moved = format!("{head}/{}", pos.parse::<u64>().unwrap() + 1);
    invalid(store.get_log_events(JOB_LOG_GROUP, S, &token(&moved)));

    // FilterLogEvents: bound to the streams it searches.
    let filter = |names: &[&str], t: Option<String>| FilterLogEvents {
        stream_names: Some(names.iter().map(|s| s.to_string()).collect()),
        next_token: t,
        limit: Some(2),
        ..Default::default()
    };
    let page = store
        .filter_log_events(JOB_LOG_GROUP, &filter(&[S, other], None))
        .expect("filter");
    let t = page.next_token.expect("more events");
    invalid(store.filter_log_events(JOB_LOG_GROUP, &filter(&[other], Some(t.clone()))));
    store
        .filter_log_events(JOB_LOG_GROUP, &filter(&[S, other], Some(t)))
        .expect("its own token");

    // DescribeLogStreams: bound to prefix and order; DescribeLogGroups' tokens are not its.
    let streams = |prefix: Option<&str>, descending: bool, t: Option<String>| DescribeStreams {
        prefix: prefix.map(String::from),
        descending,
        next_token: t,
        limit: Some(1),
        ..Default::default()
    };
    let page = store
        .describe_log_streams(JOB_LOG_GROUP, &streams(None, false, None))
        .expect("describe");
    let t = page.next_token.expect("two streams");
    invalid(store.describe_log_streams(JOB_LOG_GROUP, &streams(None, true, Some(t.clone()))));
    invalid(store.describe_log_streams(
        JOB_LOG_GROUP,
        &streams(Some("def/"), false, Some(t.clone())),
    ));
    invalid(store.describe_log_groups(&DescribeGroups {
        next_token: Some(t.clone()),
        ..Default::default()
    }));
    store
        .describe_log_streams(JOB_LOG_GROUP, &streams(None, false, Some(t)))
        .expect("its own token");
}
