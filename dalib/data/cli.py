"""Command line: `python -m dalib data {list,validate,build}` (also `python -m dalib.data ...`)."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from dalib.data.generated import build_status
from dalib.data.schema import (DataRootError, DataSourceError, ManifestError, get_manifest, list_manifests,
                               manifest_dir, split_entry, validate_dir)
from dalib.data.serve import build, load
from dalib.data.sources import env_name, local_copy


def _on_disk(m: dict) -> str:
    """What `load` would find now: built generator splits, a local copy, or the bundled package."""
    stype = m["source"]["type"]
    if stype == "generator":
        built = []
        for split in m["splits"]:
            st = build_status(m["name"], split)
            if st["n"]:
                built.append(f"{split}:{st['n']}" + ("" if st["ok"] else "(damaged)"))
        return ", ".join(built) or "not built (built on first load)"
    if stype == "bundled":
        return "installed" if importlib.util.find_spec(m["source"]["package"]) else f"pip install {m['source']['package']}"
    try:
        local = local_copy(m, None)
    except DataSourceError:
        local = None
    if local is not None:
        return f"local copy at {local}"
    return "hub" if stype in ("hf", "hub") and m["source"].get("hub_id") else f"no local copy (set {env_name(m['name'])})"


def _cmd_list(args) -> int:
    try:
        mans = list_manifests(args.dir)
    except ManifestError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{'name':<22} {'role':<19} {'source':<9} {'splits':<40} on disk")
    for m in mans:
        splits = ", ".join(f"{s}:{e.get('size') or '?'}" + (f"({e['role']})" if "role" in e else "")
                           for s, e in m["splits"].items())
        print(f"{m['name']:<22} {m['role']:<19} {m['source']['type']:<9} {splits:<40} {_on_disk(m)}")
    return 0


def _cmd_validate(args) -> int:
    directory = Path(args.dir or manifest_dir())
    if not directory.is_dir():
        print(f"{directory}: not a folder of manifests", file=sys.stderr)
        return 2
    results = validate_dir(directory)
    if not results:
        print(f"{directory}: no *.yaml manifests found", file=sys.stderr)
        return 1
    bad = 0
    for f, errors in results.items():
        for e in errors:
            print(f"{f}: {e}", file=sys.stderr)
        bad += bool(errors)
    print(f"{len(results) - bad}/{len(results)} manifests valid in {directory}")
    return 1 if bad else 0


def _cmd_build(args) -> int:
    try:
        m = get_manifest(args.name)
        if m["source"]["type"] == "generator":
            out = build(args.name, args.split, args.n, root=args.root, height=args.height, width=args.width,
                        shard_size=args.shard_size, progress=True)
            print(f"{m['name']}/{args.split}: {args.n or split_entry(m, args.split)['size']} samples in {out}")
        else:
            ds = load(args.name, args.split, root=args.root, n=args.n)
            print(f"{m['name']}/{args.split}: {len(ds)} samples, columns {ds.column_names}")
    except DataRootError as e:  # a setting: where datasets go
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ManifestError, DataSourceError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """`python -m dalib data list | validate [DIR] | build NAME --split S -n N`."""
    p = argparse.ArgumentParser(prog="python -m dalib data", description="data manifests and datasets")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("list", help="list the manifests")
    q.add_argument("--dir", default=None, help="manifest folder (default data_manifests/)")
    q = sub.add_parser("validate", help="validate every manifest of a folder")
    q.add_argument("dir", nargs="?", default=None, help="manifest folder (default data_manifests/)")
    q = sub.add_parser("build", help="materialise a split under $DALIB_DATA (default data/)")
    q.add_argument("name")
    q.add_argument("--split", required=True)
    q.add_argument("-n", type=_positive_int_arg, default=None,
                   help="number of samples (default: the manifest's split size)")
    q.add_argument("--root", default=None, help="data folder (generator) or local copy (hf/local)")
    q.add_argument("--height", type=_positive_int_arg, default=None)
    q.add_argument("--width", type=_positive_int_arg, default=None)
    q.add_argument("--shard-size", type=_positive_int_arg, default=None, help="rows per shard (generator sources)")
    args = p.parse_args(argv)
    return {"list": _cmd_list, "validate": _cmd_validate, "build": _cmd_build}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
