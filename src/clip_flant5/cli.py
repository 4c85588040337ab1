"""The `clip-flant5` command line: thin wrappers over the library, one subcommand per workflow step."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import UserError
from .vqascore import DTYPES, ScoreSettings, torch_dtype

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Optional packages (extras) a command may need, and the extra that brings each.
EXTRAS = {"matplotlib": "workflow", "pandas": "workflow", "snakemake": "workflow", "deepspeed": "train"}


def _use_threads(threads: int | None) -> None:
    """CPU threads of each process: the job's `threads` shared among the processes torchrun starts on this node
    (Snakemake sets OMP_NUM_THREADS to all of them, which every process would otherwise take). Set in the
    environment, so that torch (imported after this) starts its thread pool at that size once."""
    if threads is None:
        return
    per_process = str(max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    for name in THREAD_VARIABLES:
        os.environ[name] = per_process
    if "torch" in sys.modules:  # already started (the CLI called from Python): only if it differs
        import torch

        if torch.get_num_threads() != int(per_process):
            torch.set_num_threads(int(per_process))


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _number_type(kind, low=None, high=None, low_open=False):
    """An argparse type: `kind` within [low, high] (low excluded with `low_open`), the flag named on error."""

    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
        if number != number or (low is not None and (number <= low if low_open else number < low)):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {value}")
        if high is not None and number > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return number

    return parse


def _shard(value: str) -> tuple[int, int]:
    """`i/n`: the i-th (from 0) of n shards."""
    try:
        index, count = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be i/n (e.g. 0/4), got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"must be i/n with n >= 1 and 0 <= i < n, got {value!r}")
    return index, count


def _settings_values(args, cls, what: str) -> dict:
    """Settings of `cls` from the `--settings` JSON file (if given) with the flags given on top."""
    from .settings import values_from_args

    values = {}
    if args.settings:
        try:
            values = json.loads(Path(args.settings).read_text())
        except OSError as err:
            raise UserError(f"--settings {args.settings}: cannot read it ({err.strerror})") from None
        except json.JSONDecodeError as err:
            raise UserError(f"--settings {args.settings}: not JSON ({err}): expected an object of {what}") from None
        if not isinstance(values, dict):
            raise UserError(f"--settings {args.settings}: expected a JSON object of {what}")
    return values | values_from_args(cls, args)


def cmd_tiny_base(args) -> None:
    from .tiny import make_tiny_base

    out = make_tiny_base(args.out, seed=args.seed)
    print(f"wrote {out}/vision and {out}/language")


def cmd_init_model(args) -> None:
    from .checkpoint import init_model, save_model
    from .variants import get_variant

    variant = get_variant(args.variant) if args.variant else None
    vision = args.vision or (variant and variant.vision)
    language = args.language or (variant and variant.language)
    if not vision or not language:
        raise UserError("init-model needs --vision and --language (or a --variant that names both)")
    projector = args.projector or (variant.projector if variant else "mlp2x_gelu")
    # Built in the dtype it is saved in: an XXL base in fp32 would need ~45 GB of memory.
    dtype = torch_dtype(args.dtype)
    model = init_model(vision, language, projector_type=projector, seed=args.seed, dtype=dtype)
    save_model(model, args.out, tokenizer_dir=language, dtype=dtype, fmt=args.format)
    print(f"wrote {args.out}")


def cmd_ask(args) -> None:
    from .checkpoint import load_model
    from .inference import ask, load_tokenizer
    from .variants import resolve_model

    source = resolve_model(args.model, args.tokenizer)
    model = load_model(source.checkpoint, dtype=torch_dtype(args.dtype), device=args.device,
                       vision_tower=args.vision_tower)  # fmt: skip
    tokenizer = load_tokenizer(source.tokenizer)
    kwargs = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    if args.do_sample:
        kwargs.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    print(ask(model, tokenizer, args.image, args.question, style=args.prompt_style, **kwargs))


def cmd_train(args) -> None:
    _use_threads(args.threads)
    from .recipe import TrainSettings
    from .train import train

    settings = TrainSettings.from_dict(args.stage, _settings_values(args, TrainSettings, "training settings"))
    code = train(
        args.stage, model=args.model, data=args.data, image_root=args.image_root, output=args.output,
        work_dir=args.work_dir, projector=args.projector, tokenizer=args.tokenizer, settings=settings,
        restart=args.restart,
    )  # fmt: skip
    if code:
        print(f"clip-flant5 train: stopped by SIGTERM after saving a checkpoint in {args.work_dir}; rerun to resume")
    _exit_distributed(code)
    if code:
        raise SystemExit(code)


def _exit_distributed(code: int) -> None:
    """End a distributed training process without the interpreter's teardown: gloo's threads outlive the process
    group and about 1 in 70 two-process runs aborted there (SIGABRT) after writing every output, which torchrun
    and Snakemake report as a failed job."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def cmd_fetch(args) -> None:
    from .download import fetch_source

    paths = fetch_source(
        args.source, args.dest, sources_path=args.sources, lock_path=args.lock, refresh_lock=args.refresh_lock,
        unpack=not args.no_unpack,
    )  # fmt: skip
    for path in paths:
        print(path)
    if args.record:  # what the workflow declares as the fetch's output (the data itself is never deleted)
        from .atomic import write_json

        write_json(args.record, {"source": args.source, "provides": [str(p) for p in paths]})


def cmd_fetch_model(args) -> None:
    from .atomic import write_json
    from .download.snapshot import fetch_model

    record = fetch_model(args.repo, args.root, revision=args.revision, roles=args.role or ["checkpoint"],
                         lock_path=args.lock, refresh_lock=args.refresh_lock)  # fmt: skip
    print(json.dumps(record, indent=2))
    if args.record:
        write_json(args.record, record)


def cmd_fetch_ocrvqa_images(args) -> None:
    import shutil

    from .download.ocrvqa_images import download_ocrvqa_images

    report = download_ocrvqa_images(
        args.dataset, args.images, connections=args.connections, retries=args.retries,
        allow_failures=args.allow_failures, report_path=args.report, recheck_dead=args.recheck_dead,
    )  # fmt: skip
    print(json.dumps(report["counts"]))
    if args.record:  # the workflow's declared output; --report persists beside the images for the next run
        from .atomic import atomic_path

        with atomic_path(args.record) as tmp:
            shutil.copyfile(args.report, tmp)


def cmd_data_status(args) -> None:
    from .download import iter_status_lines, lock_status

    statuses = lock_status(args.dest, sources_path=args.sources, lock_path=args.lock, names=args.source or None)
    for line in iter_status_lines(statuses):
        print(line)


def cmd_make_demo_data(args) -> None:
    from .demo import make_demo_data

    manifest = make_demo_data(args.out, seed=args.seed, scale=args.scale)
    print(json.dumps(manifest["counts"], indent=2))


def cmd_fix_ocrvqa(args) -> None:
    from .atomic import write_json
    from .ocrvqa import fix_ocrvqa

    summary = fix_ocrvqa(args.folder, jobs=args.jobs, keep_going=args.keep_going)
    if args.report:
        write_json(args.report, summary)
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, list)}))


def cmd_flatten(args) -> None:
    from .flatten import flatten_file

    report = flatten_file(args.src, args.dst, mode=args.mode, skip_malformed=args.skip_malformed,
                          report_path=args.report)  # fmt: skip
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, (list, dict))}))


def cmd_validate_data(args) -> None:
    from .validate import validate_data

    report = validate_data(args.json, args.image_root, jobs=args.jobs, check=args.check, clean_path=args.clean,
                           report_path=args.report, drop_bad=args.drop_bad)  # fmt: skip
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, (list, dict))}))


def cmd_score(args) -> None:
    _use_threads(args.threads)
    from .score import score_file
    from .vqascore import VQAScore

    settings = _settings_values(args, ScoreSettings, "scoring settings")
    scorer = VQAScore(args.model, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer,
                      vision_tower=args.vision_tower, **settings)  # fmt: skip
    score_file(scorer.engine(), args.pairs, args.out, image_root=args.image_root, shard=args.shard,
               restart=args.restart)  # fmt: skip


def cmd_merge_scores(args) -> None:
    from .score import merge_scores

    merge_scores(args.pairs, args.shards, args.out)


def cmd_benchmark_pairs(args) -> None:
    from .benchmarks import get_benchmark, pairs
    from .jsonl import write_jsonl

    write_jsonl(args.out, pairs(get_benchmark(args.benchmark), Path(args.root)))


def cmd_evaluate(args) -> None:
    from .atomic import write_json
    from .benchmarks import get_benchmark, score_matrices
    from .jsonl import iter_jsonl

    benchmark = get_benchmark(args.benchmark)
    rows = iter_jsonl(args.scores, keys=("image", "text", "score"), what="scored pair")
    scored = {(row["image"], row["text"]): row["score"] for row in rows}
    matrices = score_matrices(benchmark, Path(args.root), scored)
    result = {"model": args.model, **benchmark.evaluate(Path(args.root), matrices)}
    write_json(args.out, result)
    if args.plot:
        from .plots import plot_correlation

        if not benchmark.human_ratings:
            raise UserError(f"--plot: {benchmark.name} has no human ratings to plot against")
        human, scores = benchmark.human_and_scores(Path(args.root), matrices)
        plot_correlation(human, scores, f"{args.model} on {benchmark.name}", args.plot)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}))


def cmd_tables(args) -> None:
    from .tables import build_tables

    compare = dict(pair.split("=", 1) for pair in args.compare)
    for path in build_tables(args.metrics, args.out_dir, compare=compare):
        print(path)


def cmd_check_devices(args) -> None:
    from .atomic import write_json
    from .devices import check_devices

    report = check_devices(args.expect_gpus)
    print(json.dumps(report, indent=2))
    if args.out:
        write_json(args.out, report)


def cmd_variants(args) -> None:
    from .variants import VARIANTS

    for variant in VARIANTS.values():
        print(json.dumps(variant.to_dict()))


def _model_help() -> str:
    from .variants import VARIANTS

    released = ", ".join(v.name for v in VARIANTS.values() if v.published)
    return f"a released model's name ({released}), a hub id, or a checkpoint folder"


def build_parser() -> argparse.ArgumentParser:
    from .prompts import DEFAULT_PROMPT_STYLE, PROMPT_STYLES
    from .recipe import TrainSettings
    from .settings import add_arguments

    parser = argparse.ArgumentParser(prog="clip-flant5", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tiny-base", help="write tiny random CLIP and FlanT5 base models (demo, tests)")
    p.add_argument("--out", required=True, help="folder; gets vision/ and language/")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_base)

    p = sub.add_parser("init-model", help="build an untrained CLIP-FlanT5 from a CLIP and a T5 checkpoint")
    p.add_argument("--vision", help="CLIP vision checkpoint: local folder or hub id")
    p.add_argument("--language", help="T5 checkpoint with tokenizer: local folder or hub id")
    p.add_argument("--variant", help="take vision/language/projector from a named variant (see `variants`)")
    p.add_argument("--out", required=True)
    p.add_argument("--projector", help="mm_projector_type (default mlp2x_gelu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the projector's initialisation")
    p.add_argument("--dtype", choices=DTYPES, default="bf16", help="dtype of the saved weights")
    p.add_argument("--format", choices=("safetensors", "bin"), default="safetensors")
    p.set_defaults(func=cmd_init_model)

    p = sub.add_parser("ask", help="answer a question about an image")
    p.add_argument("--model", required=True, help=_model_help())
    p.add_argument("--image", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--tokenizer", help="tokenizer folder or hub id (default: a released model's base tokenizer, "
                   "else the checkpoint's own)")  # fmt: skip
    p.add_argument("--vision-tower", help="replace the checkpoint's mm_vision_tower (e.g. a local CLIP copy)")
    p.add_argument("--prompt-style", default=DEFAULT_PROMPT_STYLE, choices=PROMPT_STYLES)
    p.add_argument("--max-new-tokens", type=_positive, default=64)
    p.add_argument("--num-beams", type=_positive, default=1)
    p.add_argument("--do-sample", action="store_true")
    p.add_argument("--temperature", type=_number_type(float, 0, low_open=True), default=1.0)
    p.add_argument("--top-p", type=_number_type(float, 0, 1, low_open=True), default=1.0)
    p.add_argument("--dtype", choices=DTYPES, default="fp32")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("train", help="train stage 1 (projector) or stage 2 (T5 + projector); run under torchrun")
    p.add_argument("--stage", type=int, choices=(1, 2), required=True)
    p.add_argument("--model", required=True, help="the untrained CLIP-FlanT5 (init-model output)")
    p.add_argument("--data", required=True, help="validated training JSON (one record per line)")
    p.add_argument("--image-root", required=True, help="folder the records' image paths are relative to")
    p.add_argument("--output", required=True, help="final artefacts: stage 1 mm_projector.bin, stage 2 a checkpoint")
    p.add_argument("--work-dir", required=True, help="resumable trainer checkpoints (keep it between reruns)")
    p.add_argument("--projector", help="stage 2: the stage-1 output folder")
    p.add_argument("--tokenizer", help="default: the --model folder's tokenizer")
    p.add_argument("--settings", help="JSON file of training settings (the flags below override it); unset ones "
                   "take the stage's published value")  # fmt: skip
    p.add_argument("--threads", type=_positive, help="CPU threads of the job, shared by its processes on a node")
    p.add_argument("--restart", action="store_true", help="discard checkpoints in --work-dir that other inputs "
                   "(model, data, settings) made, instead of stopping")  # fmt: skip
    add_arguments(p.add_argument_group("training settings"), TrainSettings)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("fetch", help="download, verify (sha256 lock) and unpack one data source")
    p.add_argument("source", help="a source name of the manifest (see `data-status`)")
    p.add_argument("--dest", default="resources", help="data root (downloads/, train/, benchmarks/)")
    _source_options(p)
    p.add_argument("--refresh-lock", action="store_true", help="re-record the sha256 of what is fetched")
    p.add_argument("--no-unpack", action="store_true")
    p.add_argument("--record", help="write the provided paths here as JSON once the source is complete")
    p.set_defaults(func=cmd_fetch)

    from .download.snapshot import DEFAULT_MODELS_LOCK, ROLES

    p = sub.add_parser("fetch-model", help="snapshot a hub model (pinned, locked commit) for offline jobs")
    p.add_argument("repo", help="hub model id, e.g. zhiqiulin/clip-flant5-xxl")
    p.add_argument("--root", default="resources/hub", help="snapshots go to ROOT/<repo>")
    p.add_argument("--revision", default="main", help="branch, tag or commit (the lock pins what it resolves to)")
    p.add_argument("--role", action="append", choices=ROLES, help="what the run uses it as (repeatable; default "
                   "checkpoint): decides which files are fetched")  # fmt: skip
    p.add_argument("--lock", default=str(DEFAULT_MODELS_LOCK), help="commit lock (config/models.lock.json)")
    p.add_argument("--refresh-lock", action="store_true", help="take what the revision resolves to now")
    p.add_argument("--record", help="write the snapshot's record (path, commit, files) here as JSON")
    p.set_defaults(func=cmd_fetch_model)

    p = sub.add_parser("fetch-ocrvqa-images", help="download the OCR-VQA images from the URLs of its dataset.json")
    p.add_argument("dataset", help="OCR-VQA dataset.json (fetch ocr_vqa)")
    p.add_argument("images", help="folder for <id><ext> images; files already there are kept")
    p.add_argument("--connections", type=_positive, default=16, help="parallel downloads")
    p.add_argument("--retries", type=_positive, default=4, help="attempts after a transient failure, with backoff")
    p.add_argument("--report", required=True, help="JSON report (counts, dead URLs with HTTP status); read on rerun")
    p.add_argument("--record", help="also copy the report here (the workflow's output)")
    p.add_argument("--allow-failures", action="store_true", help="exit 0 even if images failed after the retries")
    p.add_argument("--recheck-dead", action="store_true", help="ask again for URLs the last report found dead")
    p.set_defaults(func=cmd_fetch_ocrvqa_images)

    p = sub.add_parser("data-status", help="which sources are present, partial or missing (no network)")
    p.add_argument("source", nargs="*")
    p.add_argument("--dest", default="resources")
    _source_options(p)
    p.set_defaults(func=cmd_data_status)

    p = sub.add_parser("make-demo-data", help="write the synthetic demo corpus and benchmarks (real formats)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=_number_type(float, 0, low_open=True), default=1.0,
                   help="multiplies every record/image count")  # fmt: skip
    p.set_defaults(func=cmd_make_demo_data)

    p = sub.add_parser("fix-ocrvqa", help="write <id>.jpg beside every OCR-VQA .gif/.png that lacks one")
    p.add_argument("folder")
    p.add_argument("--jobs", type=_positive, help="processes (default: all cores)")
    p.add_argument("--keep-going", action="store_true", help="report undecodable files instead of failing")
    p.add_argument("--report", help="write the summary as JSON")
    p.set_defaults(func=cmd_fix_ocrvqa)

    p = sub.add_parser("flatten", help="split multi-turn conversations into single QA records (stage-2 data)")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--mode", choices=("faithful", "corrected"), default="faithful",
                   help="faithful (default): the rule the published models were trained on; corrected: no "
                   "<image> prefix on later turns of text-only records")  # fmt: skip
    p.add_argument("--skip-malformed", action="store_true", help="skip (count, list) malformed records")
    p.add_argument("--report", help="write the count report as JSON")
    p.set_defaults(func=cmd_flatten)

    p = sub.add_parser("validate-data", help="check that every referenced image exists and decodes")
    p.add_argument("json")
    p.add_argument("--image-root", required=True)
    p.add_argument("--jobs", type=_positive)
    p.add_argument("--check", choices=("decode", "open"), default="decode")
    p.add_argument("--clean", help="write the validated records here (one per line): what training reads")
    p.add_argument("--drop-bad", action="store_true", help="drop (count, list) records with bad images; "
                   "without it any bad image is an error")  # fmt: skip
    p.add_argument("--report", help="write the problems as JSON")
    p.set_defaults(func=cmd_validate_data)

    p = sub.add_parser("score", help="VQAScore of (image, text) pairs (JSONL in, JSONL with 'score' out)")
    p.add_argument("--model", required=True, help=_model_help())
    p.add_argument("--tokenizer", help="tokenizer folder or hub id (default: a released model's base tokenizer, "
                   "else the checkpoint's own)")  # fmt: skip
    p.add_argument("--pairs", required=True, help='JSONL of {"image": path, "text": str}')
    p.add_argument("--out", required=True)
    p.add_argument("--image-root", help="folder the image paths are relative to (default: the pairs file's)")
    p.add_argument("--dtype", choices=DTYPES, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--device", help="default: cuda if available")
    p.add_argument("--vision-tower", help="replace the checkpoint's mm_vision_tower (e.g. a local CLIP copy)")
    p.add_argument("--shard", type=_shard, default=(0, 1), help="i/n: score only the i-th of n disjoint groups of "
                   "images")  # fmt: skip
    p.add_argument("--threads", type=_positive, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--restart", action="store_true", help="discard partial results (<out>.parts/) made by another "
                   "model or other settings instead of stopping")  # fmt: skip
    p.add_argument("--settings", help="JSON file of scoring settings (the flags below override it)")
    add_arguments(p.add_argument_group("scoring settings"), ScoreSettings)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("merge-scores", help="merge shard outputs of `score` in the order of the pairs file")
    p.add_argument("--pairs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("shards", nargs="+")
    p.set_defaults(func=cmd_merge_scores)

    p = sub.add_parser("benchmark-pairs", help="the (image, text) pairs a benchmark needs scored, as JSONL")
    p.add_argument("benchmark")
    p.add_argument("--root", required=True, help="the benchmark's folder (images relative to it)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_benchmark_pairs)

    p = sub.add_parser("evaluate", help="a benchmark's metrics from scored pairs")
    p.add_argument("--benchmark", required=True)
    p.add_argument("--root", required=True, help="the benchmark's folder")
    p.add_argument("--scores", required=True, help="output of `score` on the benchmark's pairs")
    p.add_argument("--model", required=True, help="model name recorded in the metrics")
    p.add_argument("--out", required=True)
    p.add_argument("--plot", help="correlation benchmarks: also draw score vs human rating (PNG)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tables", help="the paper's tables (CSV, Markdown, LaTeX) beside the published numbers")
    p.add_argument("metrics", nargs="+", help="metrics JSON files of `evaluate`")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--compare", nargs="*", default=[], help="MODEL=PUBLISHED_ROW: add a delta row")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("check-devices", help="the GPUs this job sees (count, names, a matmul each, nvidia-smi)")
    p.add_argument("--expect-gpus", type=_number_type(int, 0), required=True,
                   help="fail unless torch sees exactly this many")  # fmt: skip
    p.add_argument("--out", help="also write the report as JSON here")
    p.set_defaults(func=cmd_check_devices)

    p = sub.add_parser("variants", help="list the named model variants (JSON lines)")
    p.set_defaults(func=cmd_variants)
    return parser


def _source_options(p) -> None:
    from .sources import DEFAULT_LOCK, DEFAULT_SOURCES

    p.add_argument(
        "--sources",
        default=str(DEFAULT_SOURCES),
        help="the data manifest (default: the package's clip_flant5/sources.yaml)",
    )
    p.add_argument("--lock", default=str(DEFAULT_LOCK), help="sha256 lock file (config/sources.lock.json)")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as err:  # bad input: one clear line; anything else is a bug and keeps its traceback
        print(f"clip-flant5 {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except ModuleNotFoundError as err:
        if err.name not in EXTRAS:
            raise
        print(f"clip-flant5 {args.command}: error: needs {err.name}, an optional dependency: "
              f"pip install 'clip-flant5[{EXTRAS[err.name]}]'", file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
