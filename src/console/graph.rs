//! A job's dependency graph as inline SVG, drawn on the server: the jobs it waits for (up to
//! [`MAX_DEPTH`] levels back), and for an array job its children with the order among them.
//! Bounded to [`MAX_NODES`] so a wide graph costs a fixed amount to draw.

use super::html::esc;
use super::live::text;
use crate::api::AppState;
use crate::model::{KeyValuesPair, ListJobsRequest};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

const MAX_DEPTH: i32 = 4;
const MAX_NODES: usize = 40;
/// Array children drawn; the rest are summarised in one node.
const MAX_CHILDREN: usize = 24;
const W: i32 = 190;
const H: i32 = 40;
const GAP_X: i32 = 60;
const GAP_Y: i32 = 14;
const PAD: i32 = 10;

struct Node {
    id: String,
    name: String,
    status: String,
    col: i32,
}

pub async fn svg(app: &AppState, job: &Value) -> String {
    let batch = &app.batch;
    let root = text(job, "jobId");
    let mut nodes: Vec<Node> = vec![node(job, 0)];
    let mut index: HashMap<String, usize> = HashMap::from([(root.clone(), 0)]);
    // (from, to, dashed): `from` must finish before `to` (dashed: an array's parent and child).
    let mut edges: Vec<(String, String, bool)> = Vec::new();
    let mut more = 0usize;

    // Upstream, breadth first.
    let mut frontier = vec![job.clone()];
    for depth in 1..=MAX_DEPTH {
        let mut wanted = Vec::new();
        for j in &frontier {
            for d in deps(j) {
                edges.push((d.clone(), text(j, "jobId"), false));
                if !index.contains_key(&d) && !wanted.contains(&d) {
                    wanted.push(d);
                }
            }
        }
        let room = MAX_NODES.saturating_sub(nodes.len());
        more += wanted.len().saturating_sub(room);
        wanted.truncate(room);
        if wanted.is_empty() {
            break;
        }
        frontier = describe(app, &wanted).await;
        for j in &frontier {
            index.insert(text(j, "jobId"), nodes.len());
            nodes.push(node(j, -depth));
        }
    }

    // An array child: its parent, before it.
    if job.pointer("/arrayProperties/index").is_some() {
        let parent = root.split(':').next().unwrap_or(&root).to_string();
        if !index.contains_key(&parent)
            && let Some(p) = describe(app, std::slice::from_ref(&parent)).await.first()
        {
            index.insert(parent.clone(), nodes.len());
            let mut n = node(p, -1);
            n.name = format!("{} (array)", n.name);
            nodes.push(n);
        }
        edges.push((parent, root.clone(), true));
    }

    // An array parent: its children, placed after the siblings they wait for.
    if let Some(size) = job.pointer("/arrayProperties/size").and_then(Value::as_i64) {
        let listed = batch
            .list_jobs(ListJobsRequest {
                array_job_id: Some(root.clone()),
                max_results: Some(MAX_CHILDREN as i32),
                // Any filter makes ListJobs list every status; this one excludes nothing.
                filters: Some(vec![KeyValuesPair {
                    name: Some("AFTER_CREATED_AT".into()),
                    values: Some(vec!["0".into()]),
                }]),
                ..Default::default()
            })
            .await
            .ok();
        let ids: Vec<String> = listed
            .as_ref()
            .and_then(|l| l.get("jobSummaryList")?.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|s| text(s, "jobId"))
            .collect();
        let children = describe(app, &ids).await;
        let sibling: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut col: BTreeMap<String, i32> = BTreeMap::new();
        // Children come in index order and wait only for lower indexes (SEQUENTIAL, N_TO_N).
        for c in &children {
            let id = text(c, "jobId");
            let before: Vec<String> = deps(c)
                .into_iter()
                .filter(|d| sibling.contains(d.as_str()))
                .collect();
            let c_col = before
                .iter()
                .filter_map(|d| col.get(d))
                .max()
                .map_or(1, |m| m + 1);
            if before.is_empty() {
                edges.push((root.clone(), id.clone(), true));
            }
            for d in before {
                edges.push((d, id.clone(), false));
            }
            col.insert(id.clone(), c_col);
            index.insert(id, nodes.len());
            nodes.push(node(c, c_col));
        }
        let rest = (size as usize).saturating_sub(children.len());
        if rest > 0 {
            let id = "more-children".to_string();
            index.insert(id.clone(), nodes.len());
            nodes.push(Node {
                id: id.clone(),
                name: format!("… {rest} more children"),
                status: String::new(),
                col: 1,
            });
            edges.push((root.clone(), id, true));
        }
    }
    draw(&nodes, &index, &edges, &root, more)
}

fn node(j: &Value, col: i32) -> Node {
    Node {
        id: text(j, "jobId"),
        name: text(j, "jobName"),
        status: text(j, "status"),
        col,
    }
}

fn deps(j: &Value) -> Vec<String> {
    j.get("dependsOn")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|d| text(d, "jobId"))
                .filter(|d| !d.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

async fn describe(app: &AppState, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for chunk in ids.chunks(100) {
        if let Ok(v) = app.batch.describe_jobs(chunk).await
            && let Some(jobs) = v.get("jobs").and_then(Value::as_array)
        {
            out.extend(jobs.iter().cloned());
        }
    }
    out
}

fn draw(
    nodes: &[Node],
    index: &HashMap<String, usize>,
    edges: &[(String, String, bool)],
    root: &str,
    more: usize,
) -> String {
    if nodes.len() == 1 {
        return r#"<p class="muted" id="no-deps">No dependencies.</p>"#.to_string();
    }
    let min_col = nodes.iter().map(|n| n.col).min().unwrap_or(0);
    let mut rows: HashMap<i32, i32> = HashMap::new();
    let mut pos: Vec<(i32, i32)> = Vec::with_capacity(nodes.len());
    for n in nodes {
        let r = rows.entry(n.col).or_insert(0);
        pos.push((
            PAD + (n.col - min_col) * (W + GAP_X),
            PAD + *r * (H + GAP_Y),
        ));
        *r += 1;
    }
    let width = pos.iter().map(|p| p.0).max().unwrap_or(0) + W + PAD;
    let height = pos.iter().map(|p| p.1).max().unwrap_or(0) + H + PAD;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="dependency graph">"#
    );
    let mut seen = HashSet::new();
    for (from, to, dashed) in edges {
        let (Some(&a), Some(&b)) = (index.get(from), index.get(to)) else {
            continue;
        };
        if !seen.insert((a, b)) {
            continue;
        }
        let (x1, y1) = (pos[a].0 + W, pos[a].1 + H / 2);
        let (x2, y2) = (pos[b].0, pos[b].1 + H / 2);
        let (x1, x2) = if x2 <= x1 {
            // Same column: leave from the bottom, enter at the top.
            (pos[a].0 + W / 2, pos[b].0 + W / 2)
        } else {
            (x1, x2)
        };
        let mid = (x1 + x2) / 2;
        let _ = write!(
            out,
            r#"<path class="edge{}" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"/>"#,
            if *dashed { " contains" } else { "" }
        );
    }
    for (n, (x, y)) in nodes.iter().zip(&pos) {
        let name: String = if n.name.chars().count() > 26 {
            n.name.chars().take(25).collect::<String>() + "…"
        } else {
            n.name.clone()
        };
        let class = format!(
            "node st-{}{}",
            if n.status.is_empty() {
                "NONE"
            } else {
                &n.status
            },
            if n.id == root { " self" } else { "" }
        );
        // The page's script keeps the job's own node in step with its status.
        let (rect_id, sub_id) = if n.id == root {
            (r#" id="graph-self""#, r#" id="graph-self-status""#)
        } else {
            ("", "")
        };
        let label = format!(
            r#"<rect{rect_id} class="{}" x="{x}" y="{y}" width="{W}" height="{H}" rx="6"/><text x="{}" y="{}" class="name">{}</text><text{sub_id} x="{}" y="{}" class="sub">{}</text>"#,
            esc(&class),
            x + 8,
            y + 16,
            esc(&name),
            x + 8,
            y + 32,
            esc(&n.status)
        );
        if index.get(&n.id).is_some() && n.id != "more-children" {
            let _ = write!(
                out,
                r#"<a href="/console/jobs/{}"><title>{}</title>{label}</a>"#,
                esc(&super::form::encode(&n.id)),
                esc(&n.id)
            );
        } else {
            out.push_str(&label);
        }
    }
    out.push_str("</svg>");
    if more > 0 {
        let _ = write!(
            out,
            r#"<p class="muted">{more} more dependencies not drawn.</p>"#
        );
    }
    out
}
