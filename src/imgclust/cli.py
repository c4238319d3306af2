"""The command line: parse, call the library, print, map errors to exit codes. Nothing else."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from . import __version__
from .config import DEFAULT_METHOD, RunConfig, parse_k_range
from .errors import ImgclustError

# soft_wrap: long paths are printed whole (copy-pasteable), never broken by rich.
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

STAGE_TEXT = {"extract": "Extracting features", "export": "Exporting", "sweep": "Trying k"}


class ProgressBars:
    """A progress callback that draws rich progress bars, one per stage."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBars:
        if self.enabled:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(STAGE_TEXT.get(stage, stage), total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)


class KType(click.ParamType):
    """A whole number of clusters, or 'auto'."""

    name = "K"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | None:
        if value is None or (isinstance(value, str) and value.lower() == "auto"):
            return None
        try:
            k = int(value)
        except (TypeError, ValueError):
            self.fail(f"k must be a whole number or 'auto'; got '{value}'.", param, ctx)
        if k < 1:
            self.fail(f"k must be at least 1; got {k}.", param, ctx)
        return k


def _examples(*lines: str) -> str:
    """An epilog of example command lines, printed as written (``\\b`` stops click from rewrapping them)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class AliasedOption(click.Option):
    """An option that also answers to older names, which work but are left out of --help."""

    def __init__(self, *args: Any, hidden_aliases: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = set(hidden_aliases)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts = self.opts
        self.opts = [o for o in opts if o not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def _fail(exc: ImgclustError) -> None:
    console.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(exc.exit_code)


class Group(click.Group):
    """Maps library errors to a clear message and exit code 2, everywhere."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImgclustError as exc:
            _fail(exc)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=_examples("imgclust demo --out demo-out", "imgclust run PHOTOS --out OUT",
                              "imgclust COMMAND --help"))
@click.version_option(__version__, prog_name="imgclust")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Group a folder of unlabeled images by what they show."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def feature_options(size: int | None, weights: Path | None = None, features: str = "",
                    precision: str | None = None) -> dict[str, Any]:
    from .errors import ParameterError
    from .features.default import DEFAULT_FEATURES

    options: dict[str, Any] = {"size": size} if size is not None else {}
    if precision is not None:
        if features and not features.startswith("efficientnet-lite"):  # no --features: the default network
            raise ParameterError(f"--precision is for the efficientnet-lite features; '{features}' runs in fp32 only.")
        options["precision"] = precision
    if weights is not None:
        if not features.startswith("timm:"):
            raise ParameterError(f"--weights is for timm:MODEL features; '{features or DEFAULT_FEATURES}' brings its "
                                 "own weights.")
        options["weights"] = str(weights.expanduser().resolve())
    return options


def _options(*decorators: Any) -> Any:
    """Options shared by several commands, defined once."""

    def apply(f: Any) -> Any:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


features_options = _options(
    click.option("--features", default="",
                 help="Feature extractor (see list-features). Default: efficientnet-lite2 at int8, or "
                      "efficientnet-lite0 at fp32 where this CPU has no int8 instructions."),
    click.option("--size", type=int, default=None, help="Image side for --features pixels (default 32)."),
    click.option("--precision", type=click.Choice(["fp32", "int8"]), default=None,
                 help="Network precision for efficientnet-lite features (default: int8 for the default features, "
                      "fp32 for a network named with --features): int8 is about twice as fast, with vectors "
                      "within about 0.02 cosine of fp32's. See docs/features.md."),
)
seed_labels_cache_options = _options(
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed."),
    click.option("--labels", type=click.Choice(["auto", "folder", "prefix", "none"]), default="auto",
                 show_default=True, help="Where ground-truth labels come from (only for scoring)."),
    click.option("--cache", type=click.Path(path_type=Path), default=None,
                 help="Cache folder: vectors and the results of earlier runs (default: ~/.cache/imgclust "
                      "or $IMGCLUST_CACHE)."),
    click.option("--no-cache", is_flag=True, help="Do not read or write the cache (vectors, results)."),
)


def _cache_setting(cache: Path | None, no_cache: bool) -> Any:
    if no_cache:
        return False
    return cache if cache is not None else True


@main.command(short_help="Cluster a folder of images; write a table and a report.", epilog=_examples(
    "imgclust run photos --out out                   # k chosen automatically",
    "imgclust run photos --out out --k 5 --seed 1    # five groups"))
@click.argument("images_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@features_options
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Local checkpoint for timm:MODEL features (.safetensors or a PyTorch state dict).")
@click.option("--k", "k", type=KType(), default="auto", show_default=True, help="Number of clusters, or auto.")
@click.option("--ks", "--k-range", "k_range", cls=AliasedOption, hidden_aliases=("--k-range",), default="2-30",
              show_default=True, help="k values tried by --k auto, as LOW-HIGH.")
@click.option("--method", default=DEFAULT_METHOD, show_default=True, help="Clustering method: spectral (kNN-graph spectral clustering) or kmeans (the original). See docs/methods.md.")
@seed_labels_cache_options
@click.option("--identity", type=click.Choice(["stat", "content"]), default="stat", show_default=True,
              help="How the cache recognises a file: stat (path, size, modification time) or content (a hash "
                   "of its bytes: survives renames and copies, reads every file once per run).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per batch.")
@click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where extraction and k-means run: this machine, or a Dask cluster (see docs/cluster.md).")
@click.option("--scheduler", default=None, help="With --backend dask: address of a running scheduler, "
              "e.g. tcp://10.0.0.5:8786 (the cache folder must be shared with its workers).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="With --backend dask and no --scheduler: start this many local worker processes "
                   "(default: one per core).")
@click.option("--near-duplicates", "near_duplicates", type=click.Choice(["auto", "embedding", "phash", "off"]),
              default="auto", show_default=True,
              help="How near-duplicates are found: the network's vectors (auto for network features), perceptual "
                   "hashes (pixel-level copies; auto for pixels, histograms, HOG), or not at all. See docs/clean.md.")
@click.option("--near-duplicate-threshold", type=float, default=None,
              help="Similarity (cosine scale) from which two images are near-duplicates (default: 0.75 for "
                   "embedding, the mean of the vectors' cosine and the thumbnails' edge correlation; 0.75 = 8 of "
                   "64 hash bits for phash).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def run(images_dir: Path, out_dir: Path, features: str, size: int | None, weights: Path | None, k: int | None,
        k_range: str, method: str, seed: int, labels: str, cache: Path | None, no_cache: bool, identity: str,
        batch_size: int, backend: str, scheduler: str | None, workers: int | None, near_duplicates: str,
        near_duplicate_threshold: float | None, quiet: bool, precision: str | None = None) -> None:
    """Cluster the images under IMAGES_DIR and write the results to --out."""
    from .backends import get_backend
    from .pipeline import run as run_pipeline

    config = RunConfig(features=features, feature_options=feature_options(size, weights, features, precision), k=k,
                       k_range=parse_k_range(k_range), method=method, seed=seed, labels=labels, batch_size=batch_size,
                       identity=identity, clean_options=clean_options(near_duplicates, near_duplicate_threshold))
    with get_backend(backend, scheduler=scheduler, workers=workers) as where, ProgressBars(enabled=not quiet) as bars:
        result = run_pipeline(images_dir, out_dir, config, cache=_cache_setting(cache, no_cache), progress=bars,
                              backend=where)
    print_run_summary(result.summary, out_dir)


def clean_options(near_duplicates: str, threshold: float | None) -> dict[str, Any]:
    """RunConfig.clean_options from the run command's options (only what differs from the defaults)."""
    options: dict[str, Any] = {} if near_duplicates == "auto" else {"near_duplicates": near_duplicates}
    if threshold is not None:
        options["near_duplicate_threshold"] = threshold
    return options


def _print_clean(s: dict[str, Any]) -> None:
    near, outliers, counts = s.get("near_duplicates"), s.get("outliers"), s.get("quality_counts")
    if near is None or outliers is None or counts is None:
        return
    flagged = ", ".join(f"{n} {f.replace('_', ' ')}" for f, n in counts.items() if n) or "none"
    out.print(f"Clean: {near['n_groups']} near-duplicate groups ({near['n_extra']} images beyond one per group; "
              f"duplicates.csv), {outliers['n_outliers']} outliers, quality flags: {flagged} "
              "(columns near_duplicate_group, outlier, quality in assignments.csv).", highlight=False)


def _print_failed(s: dict[str, Any]) -> None:
    if s["n_failed"]:
        bad = ", ".join(f"{n} {st}" for st, n in s["statuses"].items() if st != "ok")
        out.print(f"[yellow]{s['n_failed']} files could not be used[/] ({bad}); see assignments.csv.", highlight=False)


def _print_cluster_table(s: dict[str, Any], title: str, name_column: str) -> None:
    """Images per cluster, with the cluster names when the summary has them."""
    table = Table(title=title, show_edge=False)
    table.add_column("cluster", justify="right")
    table.add_column("images", justify="right")
    names = s.get("cluster_names") or {}
    if names:
        table.add_column(name_column)
    shown = set(s.get("cluster_ids", range(len(s["cluster_sizes"]))))  # after edits, merged-away numbers are gone
    for c, n in enumerate(s["cluster_sizes"]):
        if c not in shown:
            continue
        table.add_row(str(c), str(n), *([escape(names.get(str(c), ""))] if names else []))
    out.print(table)


def features_label(summary: dict[str, Any]) -> str:
    """The features of a run as the user reads them: the name, and the precision when it is int8."""
    extractor = summary.get("extractor")
    precision = extractor.get("precision") if isinstance(extractor, dict) else None
    return f"{summary['features']}{' int8' if precision == 'int8' else ''}"


def print_run_summary(summary: dict[str, Any], out_dir: Path) -> None:
    s = summary
    how = f" (chosen automatically: {escape(str(s.get('k_reason', '')))})" if s.get("k_auto") else ""
    out.print(f"[bold]{s['n_ok']}[/] of {s['n_images']} images clustered into [bold]{s['k']}[/] groups "
              f"with {escape(features_label(s))} + {escape(str(s['method']))}{how}.", highlight=False)
    others = [c for c in s.get("k_candidates") or [] if isinstance(c, dict) and c.get("k") != s["k"]]
    if s.get("k_auto") and others:
        out.print("Other choices (rerun with --k K into the same --out; no clustering again): "
                  + "; ".join(f"k={c['k']}: {c.get('reason', '')}" for c in others) + ".", highlight=False,
                  markup=False)
    _print_failed(s)
    if s.get("n_duplicates"):
        out.print(f"{s['n_duplicates']} files are exact copies of another file; see duplicate_of in assignments.csv.",
                  highlight=False)
    _print_clean(s)
    _print_cluster_table(s, "Cluster sizes", "suggested name")
    if "metrics" in s:
        m = s["metrics"]
        out.print(f"Against the {s['labels_mode']} labels ({s['n_labels']} classes): "
                  f"accuracy (one-to-one, Hungarian) [bold]{m['accuracy_hungarian']:.3f}[/], "
                  f"accuracy (many-to-one, majority) {m['accuracy_majority']:.3f}, "
                  f"NMI {m['nmi']:.3f}, ARI {m['ari']:.3f}", highlight=False)
    where = s.get("backend", {})
    if where.get("name") == "dask" and where.get("n_workers"):
        out.print(f"Ran on Dask: {where['n_workers']} workers, scheduler {escape(str(where['scheduler']))}.",
                  highlight=False)
    elif where.get("name") == "dask":
        out.print("Nothing ran on Dask: every vector was in the cache and the clustering ran on this machine.",
                  highlight=False)
    t = s.get("timings", {})
    out.print("Time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()), highlight=False)
    if s.get("results_cached"):
        out.print(f"Taken from the cache (an earlier run of the same images and settings computed them): "
                  f"{', '.join(map(str, s['results_cached']))}.", highlight=False, markup=False)
    out.print(f"Results in {escape(str(out_dir))}/ (assignments.csv, summary.json"
              + (", confusion.csv" if "metrics" in s else "") + (", sweep.csv" if s.get("k_auto") else "")
              + ", report.html)", highlight=False)


@main.command(short_help="Score every k of a range; suggest one.", epilog=_examples(
    "imgclust sweep photos --out sweep-out --ks 2-30",
    "imgclust sweep photos --out sweep-out --ks 2,16,64,100,256 --features pixels"))
@click.argument("images_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@features_options
@click.option("--ks", "ks", default="2-30", show_default=True, help="k values to try: LOW-HIGH (2-30) or a list (2,16,64).")
@click.option("--method", default=DEFAULT_METHOD, show_default=True, help="Clustering method.")
@seed_labels_cache_options
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per batch.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def sweep(images_dir: Path, out_dir: Path, features: str, size: int | None, ks: str, method: str, seed: int,
          labels: str, cache: Path | None, no_cache: bool, batch_size: int, quiet: bool,
          precision: str | None = None) -> None:
    """Cluster the images under IMAGES_DIR at every k of --ks, score each k and suggest one."""
    from .config import parse_ks
    from .pipeline import sweep as sweep_pipeline

    config = RunConfig(features=features, feature_options=feature_options(size, None, features, precision),
                       method=method, seed=seed,
                       labels=labels, batch_size=batch_size)
    with ProgressBars(enabled=not quiet) as bars:
        result = sweep_pipeline(images_dir, out_dir, config, ks=parse_ks(ks), cache=_cache_setting(cache, no_cache),
                                progress=bars)
    print_sweep(result.summary, result.sweep.rows, out_dir)


SWEEP_COLUMNS_SHOWN = {"k": ("k", "{}"), "inertia": ("inertia", "{:.4g}"), "silhouette": ("silhouette", "{:.3f}"),
                       "calinski_harabasz": ("CH", "{:.1f}"), "davies_bouldin": ("DB", "{:.3f}"),
                       "accuracy_majority": ("acc. majority", "{:.3f}"),
                       "accuracy_hungarian": ("acc. Hungarian", "{:.3f}"), "nmi": ("NMI", "{:.3f}"),
                       "ari": ("ARI", "{:.3f}")}


def print_sweep(summary: dict[str, Any], rows: list[Any], out_dir: Path) -> None:
    s = summary
    labelled = "n_labels" in s
    cols = list(SWEEP_COLUMNS_SHOWN)[:None if labelled else 5]
    table = Table(title=f"{s['n_ok']} images, {s['features']} + {s['method']}: criteria against k", show_edge=False)
    for c in cols:
        table.add_column(SWEEP_COLUMNS_SHOWN[c][0], justify="right")
    for row in rows:
        cells = []
        for c in cols:
            v = getattr(row, c)
            cells.append("-" if v is None or v != v else SWEEP_COLUMNS_SHOWN[c][1].format(v))
        table.add_row(*cells, style="bold" if row.k == s["k"] else None)
    out.print(table)
    out.print("Higher is better for silhouette and CH (Calinski-Harabasz), lower for DB (Davies-Bouldin); inertia "
              "falls as k grows.", highlight=False)
    if labelled:
        out.print(f"Scored against the {s['labels_mode']} labels ({s['n_labels']} classes). acc. majority: "
                  "many-to-one accuracy, each cluster takes its most common label (the original method's figure; "
                  "it rises with k by construction: one image per cluster gives 1.0). acc. Hungarian: one-to-one "
                  "accuracy, clusters matched to labels, shown only where k equals the number of labels.",
                  highlight=False)
    out.print(f"Suggested k = [bold]{s['k']}[/]: {escape(str(s['k_reason']))}", highlight=False)
    t = s.get("timings", {})
    out.print("Time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()), highlight=False)
    out.print(f"Results in {escape(str(out_dir))}/ (sweep.csv, elbow.png, criteria.png, summary.json)",
              highlight=False)


@main.command(short_help="Copy a run's images into one folder per cluster.", epilog=_examples(
    "imgclust export out --to sorted                         # copies",
    "imgclust export out --to sorted --mode move --yes       # moves; undo with:",
    "imgclust export --undo --to sorted"))
@click.argument("out_dir", type=click.Path(path_type=Path), required=False)
@click.option("--to", "dest", type=click.Path(path_type=Path), help="Destination folder for the cluster folders.")
@click.option("--mode", type=click.Choice(["copy", "symlink", "move"]), default="copy", show_default=True,
              help="copy (the originals stay), symlink (links to the originals) or move (needs --yes; undo with --undo).")
@click.option("--yes", is_flag=True, help="Confirm a move (required with --mode move).")
@click.option("--undo", "undo", is_flag=True, help="Put back the files a move sent to --to.")
@click.option("--replace", is_flag=True,
              help="When --to holds an earlier export of another grouping, remove the copies or links it made first.")
@click.option("--one-per-duplicate-group", "one_per_group", type=click.Choice(["largest", "sharpest"]), default=None,
              is_flag=False, flag_value="largest",
              help="Export one image per near-duplicate group (duplicates.csv): the largest (most pixels; the "
                   "default) or the sharpest.")
@click.option("--outliers-to", "outliers_to", default=None, metavar="NAME",
              help="Put the images marked as outliers into the folder DEST/NAME instead of their cluster's folder.")
def export(out_dir: Path | None, dest: Path | None, mode: str, yes: bool, undo: bool, replace: bool,
           one_per_group: str | None, outliers_to: str | None) -> None:
    """Put the images of a finished run (OUT_DIR) into one folder per cluster under --to."""
    from .errors import OutputError, ParameterError
    from .outputs.export import export as do_export
    from .outputs.export import plan_export, undo_export

    if dest is None:
        raise ParameterError("Name the destination with --to DEST.")
    if undo:
        undone = undo_export(dest)
        where = f" into {undone.images_dir}" if undone.restored and undone.images_dir else ""
        out.print(f"Put back {undone.restored} files moved by an earlier export to {dest}{where}.", highlight=False,
                  markup=False)
        for kept in undone.kept:
            out.print(f"[yellow]Left in place, nothing overwritten:[/] {escape(kept)}", highlight=False)
        for refused in undone.refused:
            out.print(f"[red]Refused:[/] {escape(refused)}", highlight=False)
        if undone.refused:
            raise OutputError(f"{len(undone.refused)} entries of the export journal in {dest} failed a check and "
                              "were not moved (listed above); it may have been edited. Nothing was overwritten.")
        return
    if out_dir is None:
        raise ParameterError("Name the output folder of a run: imgclust export OUT_DIR --to DEST.")
    if mode == "move":
        plan = plan_export(out_dir, dest, mode=mode, one_per_duplicate_group=one_per_group, outliers_to=outliers_to)
        folders: dict[str, int] = {}
        for a in plan.actions:
            folders[a.folder] = folders.get(a.folder, 0) + 1
        out.print(f"Plan: move {len(plan.actions)} images out of their folder into {len(folders)} folders under "
                  f"{dest}:", highlight=False, soft_wrap=True, markup=False)
        for f, n in sorted(folders.items()):
            out.print(f"  {dest / f}/  {n} images", highlight=False, soft_wrap=True, markup=False)
        for line in plan.not_moved:
            out.print(f"  [yellow]Left where it is:[/] {escape(line)}", highlight=False, soft_wrap=True)
        if not yes:
            raise ParameterError("Moving files needs --yes. Nothing was moved. "
                                 "(Every move is recorded; 'imgclust export --undo --to DEST' puts files back.)")
    with ProgressBars() as bars:
        rep = do_export(out_dir, dest, mode=mode, replace=replace, progress=bars, one_per_duplicate_group=one_per_group,
                        outliers_to=outliers_to)
    if rep.replaced or rep.kept_from_earlier:
        out.print(f"Removed {rep.replaced} files of the earlier export; kept {len(rep.kept_from_earlier)} that "
                  "were changed since.", highlight=False, markup=False)
    verb = {"copy": "Copied", "symlink": "Linked", "move": "Moved"}[mode]
    out.print(f"{verb} {rep.done} images into {dest}/ ({rep.skipped_existing} already there).", highlight=False,
              markup=False)
    if rep.missing_sources:
        out.print(f"[yellow]{len(rep.missing_sources)} images no longer exist and were skipped[/].")
    if rep.not_moved:
        out.print(f"[yellow]{len(rep.not_moved)} images were left where they are[/] (a link, or a file outside the "
                  "images folder): see the plan above.", highlight=False)
    if one_per_group:
        out.print(f"One image per near-duplicate group: the {one_per_group} one "
                  f"({'most pixels' if one_per_group == 'largest' else 'highest sharpness'}); see duplicates.csv.",
                  highlight=False)
    if outliers_to:
        out.print(f"Images marked as outliers went into the folder {outliers_to} (see the outlier column).",
                  highlight=False, markup=False)


@main.command(short_help="Rebuild the HTML report of a finished run.", epilog=_examples(
    "imgclust report out", "imgclust report out --map tsne"))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--map", "map_method", type=click.Choice(["pca", "tsne", "umap"]), default=None,
              help="Recompute the 2-D map with this method (default: keep the saved PCA map).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Embedding cache folder, used when the vectors are needed again (default: as for run).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
def report(out_dir: Path, map_method: str | None, cache: Path | None, no_cache: bool) -> None:
    """Rebuild OUT_DIR/report.html from the files of a finished run."""
    from .pipeline import rebuild_report

    with ProgressBars() as bars:
        path = rebuild_report(out_dir, map_method=map_method, cache=_cache_setting(cache, no_cache), progress=bars)
    out.print(f"Report written to {path}", highlight=False, markup=False)


@main.command(short_help="Cluster built-in photos: pixels against the network.", epilog=_examples(
    "imgclust demo --out demo-out", "imgclust demo --out demo-seed1 --seed 1"))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Folder for the demo.")
@click.option("--features", "features", multiple=True,
              help="Extractor to compare; repeat for several (default: pixels and the default features).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seeds the random crops and the clustering: the same seed gives the same images and groups.")
def demo(out_dir: Path, features: tuple[str, ...], seed: int) -> None:
    """Cluster 300 built-in photo crops with raw pixels and with the network.

    Ten public-domain or CC0 photos ship with imgclust (a cat, a coffee cup, a rocket, ...); the demo cuts 30
    random crops from each (other place, size, brightness, colour), clusters them into 10 groups with
    each extractor and scores the groups against the photo each crop came from. Nothing is downloaded.
    """
    from .demo import DEMO_FEATURES, demo_photos, run_demo

    with ProgressBars() as bars:
        results = run_demo(out_dir, features=features or DEMO_FEATURES, seed=seed, progress=bars)
    k = len(demo_photos())
    table = Table(title=f"{k} photos x 30 random crops, k = {k}, scored against the photo of each crop",
                  box=box.SIMPLE, collapse_padding=True, pad_edge=False)
    table.add_column("features", no_wrap=True, min_width=23)
    table.add_column("method", no_wrap=True)
    for col in ("acc 1:1", "acc n:1", "NMI", "ARI", "seconds"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in results.values():
        m = r.metrics or {}
        table.add_row(features_label(r.summary), r.summary["method"], f"{m.get('accuracy_hungarian', 0):.3f}",
                      f"{m.get('accuracy_majority', 0):.3f}", f"{m.get('nmi', 0):.3f}", f"{m.get('ari', 0):.3f}",
                      f"{sum(r.summary['timings'].values()):.1f}")
    out.print(table)
    out.print("acc 1:1 = one-to-one accuracy (Hungarian matching); acc n:1 = many-to-one (each cluster's majority "
              "photo).", highlight=False)
    acc = {features_label(r.summary): (r.metrics or {}).get("accuracy_hungarian", 0.0) for r in results.values()}
    if "pixels" in acc and len(acc) > 1:
        best = max((n for n in acc if n != "pixels"), key=lambda n: acc[n])
        if acc[best] > acc["pixels"]:
            out.print(f"{best} is ahead of raw pixels by {acc[best] - acc['pixels']:.3f}: a crop keeps the "
                      "content of its photo while its pixels change, and the network sees the content.",
                      highlight=False)
        else:
            out.print(f"{best} is not ahead of raw pixels here ({acc[best]:.3f} vs {acc['pixels']:.3f}); "
                      "see the reports to compare the groups.", highlight=False)
    for name, r in results.items():
        out.print(f"{name}: {escape(str(r.out_dir))}/report.html", highlight=False)


@main.command(short_help="Find the images of a run most like some query images.", epilog=_examples(
    "imgclust similar out new/cat.jpg", "imgclust similar out a.jpg b.png --top 10 --json"))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.argument("queries", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="QUERY_IMAGE...")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Matches per query image.")
@click.option("--json", "as_json", is_flag=True, help="Print the matches as JSON (one object per query).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Embedding cache folder holding the run's vectors (default: as for run).")
@click.option("--no-cache", is_flag=True,
              help="Do not read or write the embedding cache (the run's vectors are computed again).")
def similar(out_dir: Path, queries: tuple[Path, ...], top: int, as_json: bool, cache: Path | None,
            no_cache: bool) -> None:
    """The images of a finished run (OUT_DIR) that look most like each QUERY_IMAGE."""
    import json

    from .clean.similar import similar as find_similar

    with ProgressBars(enabled=not as_json) as bars:
        results = find_similar(out_dir, queries, top=top, cache=_cache_setting(cache, no_cache), progress=bars)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    for r in results:
        table = Table(title=f"Most like {escape(r.query)}", show_edge=False)
        for col, justify in (("#", "right"), ("image", "left"), ("cluster", "right"), ("similarity", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for i, m in enumerate(r.matches, 1):
            table.add_row(str(i), escape(m.path), str(m.cluster), f"{m.similarity:.3f}")
        out.print(table)


@main.command("list-features", short_help="List the feature extractors and what they need.", epilog=_examples(
    "imgclust list-features"))
def list_features_command() -> None:
    """List every feature extractor: vector size, whether it is installed, whether its weights are here."""
    from rich.markup import escape

    from .features.catalog import list_features

    table = Table(title="Feature extractors (--features NAME)")
    for col in ("name", "values", "installed", "weights offline"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", overflow="fold")
    yes_no = {True: "[green]yes[/]", False: "[red]no[/]", None: "per model"}
    for f in list_features():
        table.add_row(escape(f.name), str(f.dim) if f.dim else "depends", yes_no[f.installed],
                      yes_no[f.weights_offline], escape(f.description + (f" {f.install_hint}" if f.install_hint else "")))
    out.print(table)
    from .features.default import default_features

    name, options = default_features()
    out.print(f"Without --features: {name} at {options.get('precision', 'fp32')} on this machine.", highlight=False)


@main.command(short_help="Sort new images into the clusters of a saved run.", epilog=_examples(
    "imgclust assign out/model new-photos --out new-out"))
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("images_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Where the model's timm checkpoint is now (if it was fitted with --weights).")
@click.option("--labels", type=click.Choice(["auto", "folder", "prefix", "none"]), default="auto", show_default=True,
              help="Where ground-truth labels come from (only for scoring).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Embedding cache folder (default: ~/.cache/imgclust or $IMGCLUST_CACHE).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per batch.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default=None,
              help="Network precision (default: the model's own); a different one is refused.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def assign(model_dir: Path, images_dir: Path, out_dir: Path, weights: Path | None, labels: str, cache: Path | None,
           no_cache: bool, batch_size: int, quiet: bool, precision: str | None = None) -> None:
    """Sort the images under IMAGES_DIR into the clusters of a saved model (OUT_DIR/model of a run)."""
    from .model import assign as assign_images

    with ProgressBars(enabled=not quiet) as bars:
        result = assign_images(model_dir, images_dir, out_dir, weights=weights, labels=labels, batch_size=batch_size,
                               cache=_cache_setting(cache, no_cache), progress=bars, precision=precision)
    s = result.summary
    out.print(f"[bold]{s['n_ok']}[/] of {s['n_images']} images assigned to the {s['k']} clusters of "
              f"{escape(str(result.model.path))} "
              f"({s['n_outliers']} outliers: farther than {s['outlier_percentile']:g}% of the cluster's members "
              "were at fit time).", highlight=False)
    _print_failed(s)
    _print_cluster_table(s, "Images per cluster", "name")
    if "metrics" in s:
        m = s["metrics"]
        out.print(f"Against the {s['labels_mode']} labels ({s['n_labels']} classes): "
                  f"accuracy (one-to-one, Hungarian) [bold]{m['accuracy_hungarian']:.3f}[/], NMI {m['nmi']:.3f}",
                  highlight=False)
    out.print(f"Results in {escape(str(out_dir))}/ (assignments.csv with an outlier column, summary.json"
              + (", confusion.csv" if "metrics" in s else "") + ")", highlight=False)


def _pairs(values: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    from .errors import ParameterError

    out = []
    for v in values:
        left, eq, right = v.rpartition("=")
        if not eq or not left or not right:
            raise ParameterError(f"{what} takes {'PATH' if what == '--move' else 'CLUSTER'}=VALUE; got '{v}'.")
        out.append((left, right))
    return out


def _int(value: str, what: str) -> int:
    from .errors import ParameterError

    try:
        return int(value)
    except ValueError:
        raise ParameterError(f"{what}: '{value}' is not a cluster number.") from None


@main.command(short_help="Rename, merge, split, move or exclude; no browser.", epilog=_examples(
    "imgclust edit OUT --rename 3=beach --merge 4,7",
    "imgclust edit OUT --move cats/12.jpg=2 --exclude junk/x.jpg",
    "imgclust edit OUT --undo"))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--rename", multiple=True, metavar="C=NAME", help="Name cluster C (repeatable).")
@click.option("--merge", multiple=True, metavar="A,B[,...]", help="Merge clusters into the first one (repeatable).")
@click.option("--split", multiple=True, metavar="C=N", help="Re-cluster cluster C into N parts with the run's method.")
@click.option("--move", multiple=True, metavar="PATH=C", help="Move an image (path as in assignments.csv) to "
              "cluster C, or to one new cluster with PATH=new (repeatable).")
@click.option("--exclude", multiple=True, metavar="PATH", help="Leave an image out of exports (repeatable).")
@click.option("--undo", is_flag=True, help="Take back the latest edit (a whole earlier imgclust edit call).")
@click.option("--redo", is_flag=True, help="Put back the latest edit undone.")
def edit(out_dir: Path, rename: tuple[str, ...], merge: tuple[str, ...], split: tuple[str, ...],
         move: tuple[str, ...], exclude: tuple[str, ...], undo: bool, redo: bool) -> None:
    """Correct the clusters of a finished run (OUT_DIR/edits.jsonl); export, report and assign follow.

    Without options, shows the clusters as edited so far. All the edits of one call are checked
    first and recorded together (undone together); an unknown cluster or path writes nothing.
    """
    from . import edits as journal_edits
    from .errors import ParameterError
    from .outputs.report import write_report
    from .pipeline import figure_cache

    changes = bool(rename or merge or split or move or exclude)
    if undo + redo + changes > 1:
        raise ParameterError("Give edits, or --undo, or --redo: one at a time.")
    if undo or redo:
        journal = journal_edits.Journal(out_dir)
        edited = journal.undo(source="cli") if undo else journal.redo(source="cli")
        journal_edits.write_summary_entry(out_dir, edited)
    elif changes:
        merges = [[_int(c.strip(), "--merge") for c in m.split(",")] for m in merge]
        edited = journal_edits.edit(
            out_dir, rename={_int(c, "--rename"): n for c, n in _pairs(rename, "--rename")}, merge=merges,
            split={_int(c, "--split"): _int(n, "--split") for c, n in _pairs(split, "--split")},
            move={p: (c if c == "new" else _int(c, "--move")) for p, c in _pairs(move, "--move")},
            exclude=list(exclude), source="cli")
    else:
        edited = journal_edits.load(out_dir)
    if undo or redo or changes:
        write_report(out_dir, figure_cache=figure_cache(True))
    table = Table(title=f"Clusters after {edited.n_edits} edits", show_edge=False)
    for col in ("cluster", "images", "name"):
        table.add_column(col, justify="right" if col != "name" else "left")
    for c, n in edited.sizes.items():
        table.add_row(str(c), str(n), escape(edited.names.get(c, "")))
    out.print(table)
    if edited.n_excluded:
        out.print(f"{edited.n_excluded} images excluded (never exported).", highlight=False)
    out.print(f"Recorded in {escape(str(out_dir))}/edits.jsonl; imgclust export, report and assign use them.",
              highlight=False)


@main.command(short_help="Review and correct the clusters in a browser.", epilog=_examples(
    "imgclust review OUT", "imgclust review OUT --no-browser --port 8765"))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1, this machine only). "
              "Anything else lets other machines on that network reach the page (with the token).")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=0, show_default=True,
              help="Port (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; just print the address.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Embedding cache folder, read when a split needs the vectors (default: as for run).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
def review(out_dir: Path, host: str | None, port: int, no_browser: bool, cache: Path | None, no_cache: bool) -> None:
    """Look at and correct the clusters of a finished run (OUT_DIR) in a local web page."""
    from .review.server import LOOPBACK, ReviewServer

    if host is not None and host not in LOOPBACK:
        console.print(f"[bold yellow]Warning:[/] listening on {escape(host)}: other machines that can reach it "
                      "can open the page with the address below (it holds the token).", highlight=False)
    server = ReviewServer(out_dir, host=host or "127.0.0.1", port=port, cache=_cache_setting(cache, no_cache))
    out.print(f"Review {out_dir} at {server.url}", highlight=False, markup=False)
    out.print("Press Ctrl-C to stop.", highlight=False)
    if not no_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    if server.app.version:  # something changed: the report shows the edited clusters too
        from .outputs.report import write_report
        from .pipeline import figure_cache

        write_report(out_dir, figure_cache=figure_cache(True))
    out.print(f"Stopped. {server.journal.edited.n_edits} edits in {escape(str(out_dir))}/edits.jsonl"
              + ("; report.html rebuilt." if server.app.version else "."), highlight=False)
