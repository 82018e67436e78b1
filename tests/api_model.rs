//! Walks botocore's model of AWS Batch (the version `scripts/botocore-model.py` pins) and holds
//! Flotilla to it: every operation is implemented or refused by name, every member a request
//! can carry is classified (honoured, refused, default only, no effect, or stored but not yet
//! applied), refused members are refused by the server naming them, and the members Flotilla
//! keeps come back from Describe as they were sent. A member AWS adds fails here until
//! someone decides what Flotilla does with it.

mod common;

use common::*;
use flotilla::api::compat::{self, Support};
use flotilla::api::{OPERATIONS, TAG_OPERATIONS, UNSUPPORTED_OPS};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn implemented() -> Vec<&'static str> {
    OPERATIONS.iter().chain(TAG_OPERATIONS).copied().collect()
}

#[test]
fn every_operation_is_implemented_or_refused_by_name() {
    let model: BTreeSet<&str> = compat::model()
        .operations
        .keys()
        .map(String::as_str)
        .collect();
    let ours: BTreeSet<&str> = implemented()
        .into_iter()
        .chain(UNSUPPORTED_OPS.iter().map(|(op, _)| *op))
        .collect();
    let missing: Vec<_> = model.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&model).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "operations of botocore {} neither implemented nor refused: {missing:?}; not in the model: {extra:?}",
        compat::model().botocore
    );
}

#[test]
fn every_member_of_every_request_is_classified() {
    let unclassified: Vec<String> = compat::reachable(&implemented())
        .into_iter()
        .filter(|(_, rule)| rule.is_none())
        .map(|(key, _)| key)
        .collect();
    assert!(
        unclassified.is_empty(),
        "members of botocore {}'s requests that src/api/compat/table.rs does not classify \
         (honoured, rejected, default only, no-op or not yet): {unclassified:#?}",
        compat::model().botocore
    );
}

/// The field table in docs/api-compatibility.md is the table in the code.
#[test]
fn the_documented_field_table_is_the_code_s() {
    const BEGIN: &str = "<!-- field table: begin -->\n";
    const END: &str = "<!-- field table: end -->";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api-compatibility.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (start, end) = match (doc.find(BEGIN), doc.find(END)) {
        (Some(s), Some(e)) => (s + BEGIN.len(), e),
        _ => panic!("docs/api-compatibility.md has no field-table markers"),
    };
    let table = compat::markdown(&implemented());
    if doc[start..end] != table {
        if std::env::var_os("FLOTILLA_WRITE_DOCS").is_some() {
            std::fs::write(&path, format!("{}{table}{}", &doc[..start], &doc[end..])).unwrap();
        } else {
            panic!(
                "docs/api-compatibility.md's field table is stale: run \
                 `FLOTILLA_WRITE_DOCS=1 cargo nextest run --test api_model`"
            );
        }
    }
}

/// A value of `shape` the model allows, for members that only have to be present.
fn sample(shape: &str, depth: usize) -> Value {
    let m = compat::model();
    let s = &m.shapes[shape];
    match s.kind.as_str() {
        "string" => json!("x"),
        "integer" | "long" | "timestamp" => json!(1),
        "float" | "double" => json!(0.5),
        "boolean" => json!(true),
        "list" if depth < 8 => json!([sample(s.member.as_deref().unwrap(), depth + 1)]),
        "map" if depth < 8 => json!({"k": sample(s.value.as_deref().unwrap(), depth + 1)}),
        "structure" if depth < 8 => Value::Object(
            s.members
                .iter()
                .map(|(k, t)| (k.clone(), sample(t, depth + 1)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// Every member the table refuses is refused by the server, naming it, whatever else the
/// request holds.
#[tokio::test]
async fn refused_members_are_refused_by_the_server_naming_them() {
    let server = Server::start();
    let raw = server.raw();
    let m = compat::model();
    let mut checked = 0;
    for op in OPERATIONS {
        let input = &m.operations[*op];
        for (key, rule) in compat::reachable(&[op]) {
            let (shape, member) = key.split_once('.').unwrap();
            let value = match rule {
                Some(Support::Rejected(_)) => sample(&m.shapes[shape].members[member], 0),
                Some(Support::OnlyDefault(default, _)) => {
                    let d: Value = serde_json::from_str(default).unwrap();
                    match d {
                        Value::Bool(b) => json!(!b),
                        _ => json!("NOT-THE-DEFAULT"),
                    }
                }
                _ => continue,
            };
            // Only members of the operation's own input, so the path to them is one key.
            if shape != input {
                continue;
            }
            let r = raw.post(op, &json!({ member: value })).await;
            assert_eq!(r.status, 400, "{op} with {member} was not refused: {r:?}");
            assert!(
                r.message().starts_with(member),
                "{op}: the refusal of {member} does not name it first: {}",
                r.message()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} refused members were tried");
}

/// A job definition with every container member the table keeps comes back from
/// DescribeJobDefinitions as it was sent: nothing accepted is dropped.
#[tokio::test]
async fn every_kept_member_of_a_job_definition_comes_back() {
    let server = Server::start();
    let raw = server.raw();
    let def = json!({
        "jobDefinitionName": "everything",
        "type": "container",
        "parameters": {"who": "world"},
        "schedulingPriority": 5,
        "containerProperties": {
            "image": "busybox",
            "vcpus": 1,
            "memory": 64,
            "command": ["echo", "Ref::who"],
            "jobRoleArn": "arn:aws:iam::000000000000:role/job",
            "executionRoleArn": "arn:aws:iam::000000000000:role/exec",
            "volumes": [
                {"name": "scratch", "host": {"sourcePath": "/tmp"}},
                {"name": "efs", "efsVolumeConfiguration": {
                    "fileSystemId": "fs-1", "rootDirectory": "/", "transitEncryption": "ENABLED",
                    "transitEncryptionPort": 2049,
                    "authorizationConfig": {"accessPointId": "fsap-1", "iam": "ENABLED"}}}
            ],
            "environment": [{"name": "A", "value": "1"}],
            "mountPoints": [{"containerPath": "/scratch", "readOnly": false, "sourceVolume": "scratch"}],
            "readonlyRootFilesystem": true,
            "privileged": false,
            "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
            "user": "nobody",
            "instanceType": "m5.large",
            "resourceRequirements": [{"type": "GPU", "value": "1"}],
            "linuxParameters": {
                "devices": [{"hostPath": "/dev/null", "containerPath": "/dev/x", "permissions": ["READ"]}],
                "initProcessEnabled": true,
                "sharedMemorySize": 256,
                "tmpfs": [{"containerPath": "/t", "size": 16, "mountOptions": ["rw"]}],
                "maxSwap": 0,
                "swappiness": 10
            },
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"},
                "secretOptions": [{"name": "s", "valueFrom": "arn:aws:ssm:us-east-1:000000000000:parameter/p"}]},
            "secrets": [{"name": "S", "valueFrom": "arn:aws:ssm:us-east-1:000000000000:parameter/s"}],
            "enableExecuteCommand": false,
            "repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:us-east-1:000000000000:secret:c"}
        },
        "retryStrategy": {"attempts": 2, "evaluateOnExit": [
            {"onStatusReason": "x*", "onReason": "y*", "onExitCode": "1", "action": "RETRY"}]},
        "propagateTags": true,
        "timeout": {"attemptDurationSeconds": 60},
        "tags": {"t": "v"},
        "platformCapabilities": ["EC2"],
        "consumableResourceProperties": {
            "consumableResourceList": [{"consumableResource": "licence", "quantity": 2}]
        }
    });
    // The body covers every member of RegisterJobDefinition the table keeps, so a member
    // classified as kept later must be added here, where it is checked.
    let covered = compat::members_in("RegisterJobDefinition", &def);
    let kept: Vec<String> = compat::reachable(&["RegisterJobDefinition"])
        .into_iter()
        .filter(|(_, r)| {
            matches!(
                r,
                Some(Support::Honoured(_) | Support::NotYet(_) | Support::NoOp(_))
            )
        })
        .map(|(k, _)| k)
        .filter(|k| !covered.contains(k))
        .collect();
    // Members shared with other operations' shapes and reached here only through refused ones.
    assert!(
        kept.is_empty(),
        "not in the test's job definition: {kept:?}"
    );

    let r = raw
        .post(
            "CreateConsumableResource",
            &json!({"consumableResourceName": "licence", "totalQuantity": 3}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw.post("RegisterJobDefinition", &def).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw
        .post(
            "DescribeJobDefinitions",
            &json!({"jobDefinitionName": "everything"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let got = r.json()["jobDefinitions"][0].clone();
    let mut sent = def.clone();
    sent.as_object_mut().unwrap().remove("jobDefinitionName");
    assert_contains("", &got, &sent);
}

/// Every key and leaf of `want` is in `got` (which may hold more).
fn assert_contains(path: &str, got: &Value, want: &Value) {
    match want {
        Value::Object(w) => {
            for (k, v) in w {
                let p = format!("{path}.{k}");
                let g = got
                    .get(k)
                    .unwrap_or_else(|| panic!("{p} was dropped: {got}"));
                assert_contains(&p, g, v);
            }
        }
        Value::Array(w) => {
            let g = got
                .as_array()
                .unwrap_or_else(|| panic!("{path} is not a list: {got}"));
            assert_eq!(g.len(), w.len(), "{path}: {got} vs {want}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_contains(&format!("{path}[{i}]"), g, w);
            }
        }
        _ => assert_eq!(got, want, "{path}"),
    }
}
