"""`make steps`: rewrite the configs and Python steps of an existing repository, keeping its networks.

    python -m ser_triton.export.refresh --repository model_repository

After editing serving/steps/ or core/specs.py (or the deployment knobs), this takes seconds
instead of a full re-export: the sizes and deployment recorded in export_report.json give the
same configs as the export wrote; the ONNX files and tokenizer assets stay as they are. Deployment
flags given here replace the recorded ones (and are recorded).
"""

import argparse
import json
import sys
from pathlib import Path

from ser_triton.export import repository

from ser_triton.core import specs
from ser_triton.export.arguments import DEPLOYMENT_KNOBS, add_deployment_arguments
from ser_triton.export.pipeline import REPORT_FILE, write_report


class RefreshError(RuntimeError):
    """The repository cannot be refreshed; the message says what to do."""


def refresh(root: Path, **deployment_changes) -> dict:
    """Rewrite configs and steps from the recorded export; returns the updated report."""
    report_path = Path(root) / REPORT_FILE
    if not report_path.is_file():
        raise RefreshError(f"no {REPORT_FILE} in {root}: run `make export` first")
    report = json.loads(report_path.read_text())
    if "sizes" not in report or "deployment" not in report:
        raise RefreshError(f"{report_path} was written by an older export that did not record its sizes and "
                           "deployment: run `make export` once")
    deployment = repository.Deployment(**{**report["deployment"], **deployment_changes})
    all_specs = specs.model_specs(specs.Sizes(**report["sizes"]))
    missing = [name for name in specs.ONNX_NETWORKS if not repository.network_file(root, name).is_file()]
    if missing:
        raise RefreshError(f"{root} has no ONNX file for {', '.join(missing)}: run `make export`")
    repository.write_repository(Path(root), all_specs, deployment)
    report["deployment"] = deployment.as_dict()
    write_report(root, report)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.export.refresh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    add_deployment_arguments(parser, recorded=True)
    args = parser.parse_args(argv)
    changes = {k: getattr(args, k) for k in DEPLOYMENT_KNOBS if getattr(args, k) is not None}
    try:
        report = refresh(args.repository, **changes)
    except RefreshError as error:
        print(f"make steps: {error}", file=sys.stderr)
        return 1
    print(f"refreshed the configs and Python steps of {args.repository}/ ({report['deployment']['target']} "
          f"target; networks kept as exported)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
