"""Checks on the Terraform module in infra/ that a user relies on, without Terraform.

Terraform itself cannot run here, so the module is parsed with python-hcl2 and held against the
source of truth it depends on: the AWS calls the driver makes (src/compute/aws and the CloudWatch
Logs pass-through), the clap flags and environment variables of `flotilla server`
(src/server.rs), the driver's reserved tag and log group, and docs/aws.md's policy.

    python3 -m pytest -q infra/tests
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.parse
from functools import lru_cache
from pathlib import Path

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATES = INFRA / "templates"
SRC = ROOT / "src"
SERVER_RS = SRC / "server.rs"
AWS_DRIVER = SRC / "compute" / "aws"

# SDK crate (aws_sdk_<crate>::Client) -> IAM service prefix.
SDK_CRATE_TO_IAM = {"ec2": "ec2", "ecs": "ecs", "ssm": "ssm", "cloudwatchlogs": "logs"}

# Actions AWS checks on top of the call itself, for what the driver passes to it.
IMPLIED_ACTIONS = {
    # Instant fleets launch through RunInstances, tag what they launch (TagSpecifications) and
    # pass the launch template's instance profile.
    "ec2:CreateFleet": {"ec2:RunInstances", "ec2:CreateTags", "iam:PassRole"},
    # Launch templates are created with TagSpecifications.
    "ec2:CreateLaunchTemplate": {"ec2:CreateTags"},
    # Clusters are created with tags.
    "ecs:CreateCluster": {"ecs:TagResource"},
}


# --- helpers ----------------------------------------------------------------------------------


def unquote(value):
    """python-hcl2 (8.x) keeps string literals quoted and adds bookkeeping keys; drop both."""
    if isinstance(value, dict):
        return {
            unquote(k): unquote(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.startswith("__") and k.endswith("__"))
        }
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def tf_files() -> list[Path]:
    return sorted(INFRA.glob("*.tf"))


@lru_cache(maxsize=None)
def parsed() -> dict[str, dict]:
    out = {}
    for f in tf_files():
        with f.open() as fh:
            out[f.name] = unquote(hcl2.load(fh))
    return out


def blocks(kind: str) -> list:
    """Every top-level block of a kind (resource, data, variable, output, locals, ...)."""
    out = []
    for doc in parsed().values():
        out.extend(doc.get(kind, []))
    return out


def labelled(kind: str) -> dict[tuple[str, str], dict]:
    """resource/data blocks as {(type, name): body}."""
    out = {}
    for block in blocks(kind):
        for rtype, named in block.items():
            for name, body in named.items():
                assert (rtype, name) not in out, f"duplicate {kind} {rtype}.{name}"
                out[(rtype, name)] = body
    return out


def resources(rtype: str | None = None) -> dict:
    r = labelled("resource")
    return {k: v for k, v in r.items() if rtype is None or k[0] == rtype}


def data_sources(rtype: str) -> dict:
    return {k: v for k, v in labelled("data").items() if k[0] == rtype}


def variables() -> dict[str, dict]:
    out = {}
    for block in blocks("variable"):
        out.update(block)
    return out


def outputs() -> dict[str, dict]:
    out = {}
    for block in blocks("output"):
        out.update(block)
    return out


def local_values() -> dict[str, object]:
    out = {}
    for block in blocks("locals"):
        out.update(block)
    return out


def one(value):
    """A nested block parses as a list of one dict."""
    if isinstance(value, list):
        assert len(value) == 1, value
        return value[0]
    return value


def as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def ref(expr: str, rtype: str) -> str:
    """The resource name an expression like ${aws_iam_role.x.name} refers to."""
    m = re.search(rf"\b{re.escape(rtype)}\.([A-Za-z_][\w-]*)", str(expr))
    assert m, f"expected a reference to a {rtype}, got {expr!r}"
    return m.group(1)


RUST_TOKENS = re.compile(
    r'(?P<raw>r(?P<hashes>#*)".*?"(?P=hashes))'  # raw string literal
    r'|(?P<str>b?"(?:\\.|[^"\\])*")'  # string literal
    r"|(?P<chr>b?'(?:\\.|[^'\\])')"  # char literal (not a lifetime)
    r"|(?P<line>//[^\n]*)"  # line and doc comments
    r"|(?P<block>/\*.*?\*/)",  # block comments
    re.S,
)


def strip_rust_comments(text: str) -> str:
    """Rust source without comments; string literals (which may hold `//`) kept intact."""
    return RUST_TOKENS.sub(lambda m: " " if m.group("line") or m.group("block") else m.group(0), text)


def snake_to_pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def rust_const(name: str) -> str:
    for f in sorted(SRC.rglob("*.rs")):
        m = re.search(rf'\bconst\s+{name}\s*:\s*&str\s*=\s*"([^"]*)"', f.read_text())
        if m:
            return m.group(1)
    raise AssertionError(f"const {name} not found under src/")


# --- templates: the subset of Terraform's template syntax the module uses ---------------------


def template_names(text: str) -> set[str]:
    """Root names a template reads: ${name...} and %{ if name ... }."""
    text = text.replace("$${", "")
    names = set(re.findall(r"(?<![$%])\$\{\s*([A-Za-z_]\w*)\s*(?![\w(])", text))
    names |= set(re.findall(r"%\{~?\s*if\s+([A-Za-z_]\w*)", text))
    return names


def render(text: str, values: dict[str, str]) -> str:
    """Render ${name} and %{ if name == "lit" } ... %{ endif } (with ~ strip markers)."""

    # Directives with ~ eat the newline after them.
    out, pos, stack = [], 0, []
    token = re.compile(r"%\{(~?)\s*(if\s+(\w+)\s*(==|!=)\s*\"([^\"]*)\"|else|endif)\s*(~?)\}(\n?)")
    for m in token.finditer(text):
        chunk = text[pos : m.start()]
        if all(stack):
            out.append(chunk)
        word = m.group(2)
        if word.startswith("if"):
            name, op, lit = m.group(3), m.group(4), m.group(5)
            assert name in values, f"template reads {name!r}, not passed"
            stack.append((values[name] == lit) == (op == "=="))
        elif word == "else":
            stack[-1] = not stack[-1]
        else:
            stack.pop()
        keep_newline = m.group(6) != "~"
        if all(stack) and keep_newline:
            out.append(m.group(7))
        pos = m.end()
    assert not stack, "unbalanced %{ if }"
    out.append(text[pos:])
    rendered = "".join(out)
    assert "%{" not in rendered.replace("%%{", ""), "unsupported template directive"

    def interp(m):
        name = m.group(1)
        assert name in values, f"template reads {name!r}, not passed"
        return str(values[name])

    rendered = re.sub(r"(?<!\$)\$\{\s*([A-Za-z_]\w*)\s*\}", interp, rendered)
    assert re.search(r"(?<!\$)\$\{", rendered) is None, "unsupported template expression"
    return rendered.replace("$${", "${")


def templatefile_calls() -> dict[str, set[str]]:
    """{template file name: keys of the vars map passed to templatefile()}."""
    calls = {}
    text = json.dumps(parsed())
    for m in re.finditer(r'templatefile\(\\"\$\{path\.module\}/templates/([^"\\]+)\\",\s*\{', text):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[m.end() : i - 1]
        # Keys at the top level of the map.
        keys, depth, start = set(), 0, 0
        for j, ch in enumerate(body + ","):
            if ch in "{[(":
                depth += 1
            elif ch in "}])":
                depth -= 1
            elif ch == "," and depth == 0:
                km = re.match(r"\s*(\w+)\s*=", body[start:j])
                if km:
                    keys.add(km.group(1))
                start = j + 1
        calls[m.group(1)] = keys
    return calls


# --- what the Rust code says --------------------------------------------------------------------


def driver_clients() -> dict[str, str]:
    """Field name of each AWS SDK client on the driver's Api -> IAM prefix (from api.rs)."""
    text = strip_rust_comments((AWS_DRIVER / "api.rs").read_text())
    fields = dict(re.findall(r"pub\s+(\w+)\s*:\s*aws_sdk_(\w+)::Client\b", text))
    assert fields, "no `pub <field>: aws_sdk_<crate>::Client` in src/compute/aws/api.rs"
    out = {}
    for field, crate in fields.items():
        assert crate in SDK_CRATE_TO_IAM, (
            f"the driver gained an aws_sdk_{crate} client: add its IAM prefix to "
            "SDK_CRATE_TO_IAM here and its actions to infra/main.tf and docs/aws.md"
        )
        out[field] = SDK_CRATE_TO_IAM[crate]
    return out


def driver_actions() -> set[str]:
    """IAM actions of every AWS call the driver makes.

    Two independent extractions, united: SDK call sites on the Api's clients
    (`api.ec2.create_fleet()`, `self.api\n.ecs\n.start_task()`), and the operation names every
    call passes to `Api::call("ec2", "CreateFleet", ...)` for its rate limit and metric.
    """
    clients = driver_clients()
    iam_prefixes = set(clients.values())
    field_alt = "|".join(map(re.escape, clients))
    site = re.compile(rf"\bapi\s*\.\s*({field_alt})\s*\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)")
    literal = re.compile(r'\.\s*call\s*\(\s*"([a-z0-9]+)"\s*,\s*"([A-Za-z0-9]+)"')
    # src/compute/aws/*.rs, plus whatever else reaches the driver's clients through
    # AwsDriver::api() (the CloudWatch Logs pass-through in src/api/logs.rs).
    files = sorted(set(AWS_DRIVER.glob("*.rs")) | set(SRC.rglob("*.rs")))
    actions = set()
    for f in files:
        text = strip_rust_comments(f.read_text())
        for field, op in site.findall(text):
            actions.add(f"{clients[field]}:{snake_to_pascal(op)}")
        if f.parent == AWS_DRIVER or "api()" in text:
            for service, op in literal.findall(text):
                if service in iam_prefixes:
                    actions.add(f"{service}:{op}")
    return actions


def clap_server_args() -> tuple[set[str], set[str]]:
    """(long flags, environment variable names) of `flotilla server`, from src/server.rs."""
    text = strip_rust_comments(SERVER_RS.read_text())
    flags, envs = set(), set()
    for m in re.finditer(r"#\[arg\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        attr = text[m.end() : i - 1]
        field = re.match(r"\s*\]\s*(?:#\[[^\]]*\]\s*)*pub\s+(r#)?(\w+)\s*:", text[i:])
        assert field, f"no field after #[arg({attr})] in src/server.rs"
        explicit = re.search(r'\blong\s*=\s*"([^"]+)"', attr)
        if explicit:
            flags.add(explicit.group(1))
        elif re.search(r"\blong\b", attr):
            # clap derive: the field name in kebab-case.
            flags.add(field.group(2).replace("_", "-"))
        env = re.search(r'\benv\s*=\s*"([^"]+)"', attr)
        if env:
            envs.add(env.group(1))
    envs |= set(re.findall(r'env::var(?:_os)?\(\s*"([^"]+)"\s*\)', text))
    return flags, envs


# --- 1. parsing ----------------------------------------------------------------------------------


def test_every_tf_file_parses():
    names = {f.name for f in tf_files()}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names, names
    for f in tf_files():
        with f.open() as fh:
            assert isinstance(hcl2.load(fh), dict), f


def test_provider_versions():
    tf = one(blocks("terraform")[0])
    providers = one(tf["required_providers"])
    aws = providers["aws"]
    assert aws["source"] == "hashicorp/aws"
    assert re.fullmatch(r"~>\s*5(\.\d+)*", aws["version"]), aws["version"]


# --- 2. variables --------------------------------------------------------------------------------


def test_every_variable_has_description_and_type():
    vs = variables()
    assert vs
    for name, body in vs.items():
        assert str(body.get("description", "")).strip(), f"variable {name}: no description"
        assert body.get("type"), f"variable {name}: no type"


def test_variables_declared_and_used():
    declared = set(variables())
    everything = json.dumps(parsed())
    referenced = set(re.findall(r"\bvar\.([A-Za-z_][\w-]*)", everything))
    undeclared = referenced - declared
    assert not undeclared, f"var.X used but not declared: {sorted(undeclared)}"
    # Used means used outside variable blocks (a validation reading its own variable is not a use).
    outside = json.dumps({f: {k: v for k, v in d.items() if k != "variable"} for f, d in parsed().items()})
    used = set(re.findall(r"\bvar\.([A-Za-z_][\w-]*)", outside))
    unused = declared - used
    assert not unused, f"declared but never used: {sorted(unused)}"


def test_templates_get_exactly_what_they_read():
    calls = templatefile_calls()
    on_disk = {p.name for p in TEMPLATES.iterdir() if p.is_file()}
    assert set(calls) == on_disk, f"templatefile() calls {sorted(calls)} vs templates/ {sorted(on_disk)}"
    for name, passed in calls.items():
        read = template_names((TEMPLATES / name).read_text())
        assert read <= passed, f"{name} reads {sorted(read - passed)} that templatefile() does not pass"
        assert passed <= read, f"{name}: templatefile() passes unused {sorted(passed - read)}"


# --- 3. the control plane's IAM policy covers the driver ---------------------------------------


def control_plane_role() -> str:
    instances = resources("aws_instance")
    assert len(instances) == 1, f"expected one control-plane instance, got {list(instances)}"
    (_, inst), = instances.items()
    profile = resources("aws_iam_instance_profile")[("aws_iam_instance_profile", ref(inst["iam_instance_profile"], "aws_iam_instance_profile"))]
    return ref(profile["role"], "aws_iam_role")


def control_plane_statements() -> list[dict]:
    role = control_plane_role()
    docs = []
    for (_, _), body in resources("aws_iam_role_policy").items():
        if ref(body["role"], "aws_iam_role") == role:
            docs.append(ref(body["policy"], "aws_iam_policy_document"))
    assert docs, f"no aws_iam_role_policy on aws_iam_role.{role}"
    statements = []
    for name in docs:
        doc = data_sources("aws_iam_policy_document")[("aws_iam_policy_document", name)]
        statements += as_list(doc.get("statement"))
        for dyn in as_list(doc.get("dynamic")):
            for content in as_list(dyn.get("statement", {}).get("content")):
                statements.append(content)
    return statements


def allowed_actions(statements) -> set[str]:
    out = set()
    for s in statements:
        assert "not_actions" not in s, "NotAction statements grant too much"
        if s.get("effect", "Allow") == "Allow":
            out |= set(as_list(s.get("actions")))
    return out


def test_driver_extraction_finds_the_calls():
    actions = driver_actions()
    # If the extraction breaks, it must not pass by finding nothing.
    assert {"ec2:CreateFleet", "ecs:StartTask", "ecs:DescribeTasks", "logs:GetLogEvents"} <= actions, actions
    assert len(actions) >= 15, actions


def test_policy_grants_every_driver_call():
    granted = allowed_actions(control_plane_statements())
    needed = set(driver_actions())
    for action in list(needed):
        needed |= IMPLIED_ACTIONS.get(action, set())
    missing = sorted(needed - granted)
    assert not missing, f"the control-plane policy lacks actions the driver needs: {missing}"


def test_policy_covers_docs_aws_md():
    text = (ROOT / "docs" / "aws.md").read_text()
    m = re.search(r"## Permissions.*?```json\n(.*?)```", text, re.S)
    assert m, "docs/aws.md: no JSON policy under ## Permissions"
    documented = set()
    for s in json.loads(m.group(1))["Statement"]:
        documented |= set(as_list(s["Action"]))
    missing = sorted(documented - allowed_actions(control_plane_statements()))
    assert not missing, f"docs/aws.md grants actions the module does not: {missing}"


def test_policy_has_no_wildcard_actions_and_narrow_pass_role():
    statements = control_plane_statements()
    for s in statements:
        for action in as_list(s.get("actions")):
            assert "*" not in action, f"wildcard action {action!r} in the control-plane policy"
    # Every Allow statement in the module, not only this one.
    for (_, name), doc in data_sources("aws_iam_policy_document").items():
        for s in as_list(doc.get("statement")):
            if s.get("effect", "Allow") == "Allow":
                for action in as_list(s.get("actions")):
                    assert "*" not in action, f"wildcard Allow {action!r} in {name}"
    pass_role = [s for s in statements if "iam:PassRole" in as_list(s.get("actions"))]
    assert len(pass_role) == 1
    res = as_list(pass_role[0].get("resources"))
    assert res and all("*" not in r for r in res), f"iam:PassRole on {res}"
    ecs_role = ref(res[0], "aws_iam_role")
    # The role it may pass is the ECS container-instance role behind the output profile.
    profile = ref(outputs()["ecs_instance_profile_arn"]["value"], "aws_iam_instance_profile")
    assert ref(resources("aws_iam_instance_profile")[("aws_iam_instance_profile", profile)]["role"], "aws_iam_role") == ecs_role
    attached = [b["policy_arn"] for b in resources("aws_iam_role_policy_attachment").values() if ref(b["role"], "aws_iam_role") == ecs_role]
    assert any(a.endswith("policy/service-role/AmazonEC2ContainerServiceforEC2Role") for a in attached), attached


def test_control_plane_reads_only_its_binary_and_secrets():
    statements = control_plane_statements()
    by_action = {}
    for s in statements:
        for a in as_list(s.get("actions")):
            by_action.setdefault(a, []).extend(as_list(s.get("resources")))
    assert all(
        "aws_s3_object" in r or "binary_key" in r or "/bin/" in r or "rds_ca_key" in r for r in by_action["s3:GetObject"]
    ), by_action["s3:GetObject"]
    assert by_action["secretsmanager:GetSecretValue"], "no secret readable"
    assert all(r != "*" for r in by_action["secretsmanager:GetSecretValue"])
    # Managed policies on the control plane: Session Manager at most.
    role = control_plane_role()
    for body in resources("aws_iam_role_policy_attachment").values():
        if ref(body["role"], "aws_iam_role") == role:
            assert body["policy_arn"].endswith(":iam::aws:policy/AmazonSSMManagedInstanceCore"), body["policy_arn"]


# --- 4. the systemd unit only uses flags `flotilla server` has -------------------------------------


def server_invocations() -> list[list[str]]:
    """Flags of every `flotilla server` command line in templates/ (with \\ continuations)."""
    found = []
    for t in sorted(TEMPLATES.iterdir()):
        text = t.read_text()
        for m in re.finditer(r"flotilla\s+server\b((?:[^\n]*\\\n)*[^\n]*)", text):
            found.append(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", m.group(1)))
    return found


def test_unit_flags_exist_in_server_rs():
    flags, _ = clap_server_args()
    assert {"listen", "data-dir", "database-url", "aws", "aws-region", "aws-ami"} <= flags, flags
    invocations = server_invocations()
    assert invocations, "no `flotilla server` command line in infra/templates"
    for used in invocations:
        unknown = sorted(set(used) - flags)
        assert not unknown, f"flags not in src/server.rs: {unknown}"
        assert "aws" in used, "the control plane must run the AWS driver (--aws)"
        assert "aws-endpoint-url" not in used, "--aws-endpoint-url points the driver at an emulator"
        assert "listen" in used and "data-dir" in used


def test_template_environment_names_exist_in_server_rs():
    _, envs = clap_server_args()
    text = "".join(t.read_text() for t in TEMPLATES.iterdir())
    used = set(re.findall(r"\bFLOTILLA_[A-Z0-9_]+\b", text))
    unknown = sorted(used - envs)
    assert not unknown, f"environment variables src/server.rs does not read: {unknown}"
    # A non-loopback --listen is refused without credentials.
    assert {"FLOTILLA_ACCESS_KEY_ID", "FLOTILLA_SECRET_ACCESS_KEY"} <= used
    # The postgres URL goes through the --database-url flag's environment variable.
    _, server_envs = clap_server_args()
    assert "FLOTILLA_DATABASE_URL" in server_envs and "FLOTILLA_DATABASE_URL" in used


def sample_values(database: str) -> dict[str, str]:
    return {
        "api_port": "8080",
        "region": "eu-west-1",
        "account_id": "123456789012",
        "job_ami_id": "ami-0123456789abcdef0",
        "aws_idle_seconds": "300",
        "spot_max_interruptions": "3",
        "events_bus_name": "",
        "cloudwatch_namespace": "",
        "bucket": "flotilla-artifacts-abc",
        "binary_key": "bin/flotilla",
        "binary_sha256": "0" * 64,
        "api_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:flotilla/api-x",
        "database": database,
        "db_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:flotilla/database-x" if database == "postgres" else "",
        "rds_ca_key": "tls/rds-ca-bundle.pem",
    }


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_rendered_boot_script_is_valid_shell(database, tmp_path):
    values = sample_values(database)
    values["service_unit"] = render((TEMPLATES / "flotilla.service.tftpl").read_text(), values)
    script = render((TEMPLATES / "user-data.sh.tftpl").read_text(), values)
    user_data = render((TEMPLATES / "cloud-init.tftpl").read_text(), {"script": script})
    assert "[scripts-user, always]" in user_data
    assert script.startswith("#!/bin/bash\n")
    path = tmp_path / "boot.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert ("FLOTILLA_DATABASE_URL=postgres://" in script) == (database == "postgres")
    assert "--listen 0.0.0.0:8080" in values["service_unit"]
    # Without job_ami_id the unit passes no --aws-ami: the driver resolves AMIs from SSM.
    unpinned = render((TEMPLATES / "flotilla.service.tftpl").read_text(), values | {"job_ami_id": ""})
    assert "--aws-ami" not in unpinned and "--aws-region eu-west-1 \\\n    --aws-idle-seconds" in unpinned, unpinned
    # The optional outputs are passed only when named, each on a line of the command.
    assert "--events-bus" not in unpinned and "--cloudwatch-namespace" not in unpinned
    outputs = render((TEMPLATES / "flotilla.service.tftpl").read_text(),
                     values | {"events_bus_name": "batch-events", "cloudwatch_namespace": "Flotilla"})
    assert "    --events-bus batch-events \\\n" in outputs, outputs
    assert "    --cloudwatch-namespace Flotilla \\\n" in outputs, outputs
    assert shutil.which("systemd-analyze"), "systemd-analyze (Debian's systemd) is needed to check the unit"
    unit = tmp_path / "flotilla.service"
    unit.write_text(values["service_unit"])
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    # The binary and the user do not exist here, which it reports without a line number;
    # what it finds wrong in the file itself comes as "<file>:<line>: ...".
    bad = [l for l in r.stderr.splitlines() if re.match(rf"{re.escape(str(unit))}:\d+:", l)]
    assert not bad, bad


STUB_AWS = r"""#!/bin/bash
# Stand-in for the AWS CLI: `s3 cp` writes the fake binary, `secretsmanager` answers the secrets.
echo "aws $*" >>"$STUB_LOG"
case "$1 $2" in
  "s3 cp")
    case "$*" in
      *rds-ca-bundle.pem*) printf -- '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' >"${@: -1}" ;;
      *) cp "$STUB_BINARY" "${@: -1}" ;;
    esac ;;
  "secretsmanager get-secret-value")
    while [ $# -gt 0 ]; do [ "$1" = --secret-id ] && id=$2; shift; done
    case "$id" in
      *api*) echo '{"access_key_id":"FLOTTEST","secret_access_key":"s3cret"}' ;;
      *database*) echo '{"engine":"postgres","host":"db.example","port":5432,"dbname":"flotilla","username":"flotilla","password":"pw"}' ;;
      *) exit 1 ;;
    esac ;;
  *) exit 1 ;;
esac
"""


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_boot_script_runs_against_stubs(database, tmp_path):
    """Runs the rendered boot script with the AWS CLI, systemctl and friends stubbed, under a
    temporary root: it must install the binary it checked, the env file and the unit."""
    root = tmp_path / "root"
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls.log"
    fake = tmp_path / "flotilla"
    fake.write_text("#!/bin/sh\necho flotilla 0.0.0\n")
    for name, body in {
        "aws": STUB_AWS,
        "systemctl": '#!/bin/sh\necho "systemctl $*" >>"$STUB_LOG"\n',
        "id": "#!/bin/sh\nexit 0\n",
        "logger": "#!/bin/sh\ncat >/dev/null\n",
    }.items():
        (stubs / name).write_text(body)
        (stubs / name).chmod(0o755)
    values = sample_values(database)
    values["binary_sha256"] = hashlib.sha256(fake.read_bytes()).hexdigest()
    values["service_unit"] = render((TEMPLATES / "flotilla.service.tftpl").read_text(), values)
    script = render((TEMPLATES / "user-data.sh.tftpl").read_text(), values)
    for path in ("/opt/flotilla", "/etc/flotilla", "/etc/systemd/system", "/var/log", "/var/lib/flotilla"):
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        script = script.replace(path, str(root / path.lstrip("/")))
    # Nothing outside the temporary root may be written (CI runs as root): no system path is
    # left but the unit's own text.
    outside = re.sub(r"<<'UNIT'\n.*?\nUNIT\n", "", script, flags=re.S)
    outside = re.sub(re.escape(str(root)) + r"/[^\s'\")]*", "", outside)
    outside = re.sub(r"(?m)^\s*#.*$", "", outside)
    assert not re.search(r"(?<![\w.])/(etc|opt|var|usr|lib|root|home)/", outside), "unmapped system path in the boot script"
    (tmp_path / "boot.sh").write_text(script)
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", STUB_LOG=str(log), STUB_BINARY=str(fake))
    r = subprocess.run(["bash", str(tmp_path / "boot.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "opt/flotilla/bin/flotilla").read_bytes() == fake.read_bytes()
    env_file = root / "etc/flotilla/flotilla.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    lines = env_file.read_text().splitlines()
    expected = ["FLOTILLA_ACCESS_KEY_ID=FLOTTEST", "FLOTILLA_SECRET_ACCESS_KEY=s3cret"]
    if database == "postgres":
        ca = root / "opt/flotilla/rds-ca-bundle.pem"
        assert oct(ca.stat().st_mode & 0o777) == "0o644" and "BEGIN CERTIFICATE" in ca.read_text()
        expected.append(
            "FLOTILLA_DATABASE_URL=postgres://flotilla:pw@db.example:5432/flotilla"
            f"?sslmode=verify-full&sslrootcert={urllib.parse.quote(str(ca), safe='')}"
        )
    assert lines == expected
    unit = (root / "etc/systemd/system/flotilla.service").read_text()
    assert "ExecStart=" in unit and "--aws-ami ami-0123456789abcdef0" in unit
    calls = log.read_text()
    assert "systemctl restart flotilla.service" in calls
    assert "s3://flotilla-artifacts-abc/bin/flotilla" in calls


# --- 5. the API is not open to the world ----------------------------------------------------------


def test_api_security_group_has_no_world_ingress():
    api_sg = ref(one(list(resources("aws_instance").values())).get("vpc_security_group_ids")[0], "aws_security_group")
    sg = resources("aws_security_group")[("aws_security_group", api_sg)]
    world = {"0.0.0.0/0", "::/0"}
    for rule in as_list(sg.get("ingress")):
        assert not world & set(as_list(rule.get("cidr_blocks")) + as_list(rule.get("ipv6_cidr_blocks"))), rule
    rules = [
        (name, body)
        for (rtype, name), body in resources().items()
        if rtype in ("aws_vpc_security_group_ingress_rule", "aws_security_group_rule")
        and ref(body["security_group_id"], "aws_security_group") == api_sg
        and body.get("type", "ingress") == "ingress"
    ]
    assert rules, "no ingress rule on the API security group"
    for name, body in rules:
        for key in ("cidr_ipv4", "cidr_ipv6", "cidr_blocks", "ipv6_cidr_blocks"):
            for cidr in as_list(body.get(key)):
                assert cidr not in world, f"{name}: {key} = {cidr}"
                if "${" in cidr:
                    # Only ever from allowed_cidrs.
                    assert cidr == "${each.value}" and "var.allowed_cidrs" in str(body.get("for_each")), (name, cidr, body.get("for_each"))
    allowed = variables()["allowed_cidrs"]
    assert "default" not in allowed, "allowed_cidrs must have no default"
    conditions = " ".join(str(v.get("condition")) for v in as_list(allowed.get("validation")))
    assert "0.0.0.0/0" in conditions, "allowed_cidrs must refuse 0.0.0.0/0"
    # The job instances' group takes no inbound traffic at all.
    job_sg = ref(outputs()["job_security_group_id"]["value"], "aws_security_group")
    assert not as_list(resources("aws_security_group")[("aws_security_group", job_sg)].get("ingress"))
    for (rtype, name), body in resources().items():
        if rtype in ("aws_vpc_security_group_ingress_rule", "aws_security_group_rule") and body.get("type", "ingress") == "ingress":
            assert ref(body["security_group_id"], "aws_security_group") != job_sg, name


# --- what else a deployment relies on -------------------------------------------------------------


def test_no_terraform_tag_collides_with_the_driver():
    reserved = rust_const("TAG_MANAGED_BY").split(":")[0] + ":"
    provider = [p["aws"] for p in blocks("provider") if "aws" in p]
    assert provider and one(provider[0].get("default_tags")), "tags go on everything through default_tags"

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "tags":
                    # A map literal, or an expression such as merge(var.tags, {"k" = "v"}).
                    keys = list(v) if isinstance(v, dict) else re.findall(r'"([^"]+)"\s*[=:]', str(v))
                    bad = [t for t in keys if str(t).startswith(reserved)]
                    assert not bad, f"tag keys {bad}: the driver's orphan sweep owns {reserved}*"
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(parsed())
    conditions = " ".join(str(v.get("condition")) for v in as_list(variables()["tags"].get("validation")))
    assert f'"{reserved}"' in conditions, "var.tags must refuse the driver's reserved prefix"


def test_log_group_is_the_drivers():
    groups = resources("aws_cloudwatch_log_group")
    assert [g["name"] for g in groups.values()] == [rust_const("JOB_LOG_GROUP")]
    assert all("var.log_retention_days" in str(g["retention_in_days"]) for g in groups.values())


def test_data_at_rest_is_encrypted_and_private():
    inst = one(list(resources("aws_instance").values()))
    assert one(inst["root_block_device"])["encrypted"] is True
    assert "ami" in one(inst["lifecycle"])["ignore_changes"], "a new AMI must not replace the instance (SQLite on its root volume)"
    assert one(inst["metadata_options"])["http_tokens"] == "required"
    for db in resources("aws_db_instance").values():
        assert db["storage_encrypted"] is True and db["publicly_accessible"] is False
        assert "random_password" in str(db["password"])
    (bucket_name,) = [n for (_, n) in resources("aws_s3_bucket")]
    per_bucket = lambda t: [b for b in resources(t).values() if ref(b["bucket"], "aws_s3_bucket") == bucket_name]
    (versioning,) = per_bucket("aws_s3_bucket_versioning")
    assert one(versioning["versioning_configuration"])["status"] == "Enabled"
    (pab,) = per_bucket("aws_s3_bucket_public_access_block")
    assert all(pab[k] is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"))
    assert per_bucket("aws_s3_bucket_server_side_encryption_configuration")
    obj = resources("aws_s3_object")[("aws_s3_object", "flotilla_binary")]
    assert "var.flotilla_binary_path" in str(obj["source"])


def test_postgres_over_verified_tls():
    cargo = (ROOT / "Cargo.toml").read_text()
    sqlx = re.search(r"^sqlx\s*=\s*(.*)$", cargo, re.M)
    assert sqlx and "tls-rustls" in sqlx.group(1), "the module connects with TLS: sqlx needs its rustls feature"
    (pg,) = resources("aws_db_parameter_group").values()
    params = {p["name"]: str(p["value"]) for p in as_list(pg["parameter"])}
    assert params.get("rds.force_ssl") == "1", params
    (bundle,) = data_sources("http").values()
    assert "truststore.pki.rds.amazonaws.com/${var.region}/${var.region}-bundle.pem" in bundle["url"]
    (obj,) = [o for (_, n), o in resources("aws_s3_object").items() if n == "rds_ca_bundle"]
    assert "data.http.rds_ca_bundle" in str(obj["content"]) and "local.rds_ca_key" in str(obj["key"])
    script = (TEMPLATES / "user-data.sh.tftpl").read_text()
    assert "sslmode=verify-full&sslrootcert=" in script and "sslmode=disable" not in script
    assert "force_ssl" not in (INFRA / "main.tf").read_text().replace('"rds.force_ssl"', "")


def test_outputs():
    outs = outputs()
    for name in (
        "endpoint_url",
        "control_plane_instance_id",
        "ecs_instance_profile_arn",
        "job_security_group_id",
        "create_compute_environment_example",
    ):
        assert name in outs, f"output {name} missing"
        assert str(outs[name].get("description", "")).strip(), f"output {name}: no description"
    assert local_values()["endpoint_url"] == "http://${aws_instance.control_plane.private_ip}:${var.api_port}"
    example = outs["create_compute_environment_example"]["value"]
    assert "aws batch create-compute-environment" in example and "--endpoint-url ${local.endpoint_url}" in example


def test_docs_list_every_variable_and_output():
    doc = (ROOT / "docs" / "infra.md").read_text()
    missing = [v for v in variables() if f"| `{v}` |" not in doc]
    assert not missing, f"docs/infra.md's variables table lacks {missing}"
    missing = [o for o in outputs() if f"`{o}`" not in doc]
    assert not missing, f"docs/infra.md does not mention outputs {missing}"
