#!/usr/bin/env python3
"""Writes src/api/compat/batch-model.json: the shapes of AWS Batch's API from a pinned botocore.

Only what the server and the model-walking test need is kept (each operation's input shape and,
for every structure, list and map, the shapes of its members), without documentation. Run it
when moving the pin; `scripts/test.sh` runs it with --check so the committed file is the pinned
model's.

    python3 scripts/botocore-model.py [--check]
"""
import gzip
import io
import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

BOTOCORE = "1.44.8"
ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "src/api/compat/batch-model.json"
MEMBER = "botocore/data/batch/2016-08-10/service-2.json.gz"


def load_model():
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", f"botocore=={BOTOCORE}", "-d", d],
            check=True,
        )
        wheel = next(pathlib.Path(d).glob("botocore-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            return json.load(gzip.open(io.BytesIO(z.read(MEMBER))))


def compact(model):
    shapes = {}
    for name, s in model["shapes"].items():
        t = s["type"]
        if t == "structure":
            shapes[name] = {"type": t, "members": {m: v["shape"] for m, v in s["members"].items()},
                            "required": s.get("required", [])}
        elif t == "list":
            shapes[name] = {"type": t, "member": s["member"]["shape"]}
        elif t == "map":
            shapes[name] = {"type": t, "value": s["value"]["shape"]}
        else:
            shapes[name] = {"type": t}
    ops = {name: o["input"]["shape"] for name, o in model["operations"].items() if "input" in o}
    return {"botocore": BOTOCORE, "operations": ops, "shapes": shapes}


def main():
    text = json.dumps(compact(load_model()), indent=0, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} is not botocore {BOTOCORE}'s model: run python3 scripts/botocore-model.py")
        print(f"botocore-model: {OUT.relative_to(ROOT)} matches botocore {BOTOCORE}")
        return
    OUT.write_text(text)
    print(f"wrote {OUT} from botocore {BOTOCORE}")


if __name__ == "__main__":
    main()
