"""`vmp ablate --suite diagnostics`: the paper's Table 5 variants on the decay and contradiction
tasks (`vmp_jax.data.diagnostic`), at several knob settings and seeds.

For each task and knob the dataset is generated once (WORKDIR/data/<task>_<knob>); for each
seed and variant a model is trained from the base config (configs/diagnostics.py) with that
seed and evaluated once on the validation videos (WORKDIR/runs/<task>_<knob>/seed<s>/<variant>,
its eval/predictions.csv; a run whose predictions exist is not repeated, so the suite resumes).
Then, per task: mean and spread of val top-1 per variant and knob, McNemar's test of VMP
against VideoMamba on the pooled seeds (each (seed, video) a pair), accuracy against the knob
(PNG), and the similarity matrices of one trained VideoMamba and one VMP on the same clip.
"""

import dataclasses
import os
import statistics
import time

import numpy as np

from vmp_jax import compile_cache
from vmp_jax.data import diagnostic
from vmp_jax.evaluate import metrics, multiview
from vmp_jax.train import ablate, loop

PAIR = ("vmp", "videomamba")  # McNemar: VMP against VideoMamba


@dataclasses.dataclass(frozen=True)
class Settings:
    tasks: tuple[str, ...] = diagnostic.TASKS
    knobs: dict = dataclasses.field(default_factory=lambda: dict(diagnostic.DEFAULT_KNOBS))
    seeds: int = 3
    variants: tuple[str, ...] = tuple(ablate.VARIANTS)
    videos_per_class: int = 640
    workers: int | None = None  # encoding processes


@dataclasses.dataclass(frozen=True)
class Run:
    task: str
    knob: int
    seed: int
    variant: str
    predictions: metrics.Predictions

    @property
    def top1(self) -> float:
        return metrics.top_k(self.predictions, 1)


def run_config(config, task: diagnostic.Task, data_root: str, seed: int, variant: str):
    """The base config for one run: the task's data and clip length, the seed, the variant."""
    config = ablate.variant_config(config, variant)
    config.seed = seed
    config.data.data_root = data_root
    config.data.train_list = os.path.join(data_root, "train.txt")
    config.data.val_list = os.path.join(data_root, "val.txt")
    config.model.num_frames = config.data.num_frames = task.num_frames
    config.model.img_size = config.data.img_size = config.data.short_side = task.size
    config.model.patch_size = task.patch
    return config


def run(config, workdir: str, settings: Settings = Settings(), echo=print) -> list[Run]:
    """Trains and evaluates every (task, knob, seed, variant); writes the report."""
    with _compilation_cache(os.path.join(workdir, "jax_cache")):
        return _run(config, workdir, settings, echo)


def _compilation_cache(path: str):
    """Runs that differ only in their seed compile the same programs: cache them on disk."""
    return compile_cache.cache_options(
        jax_compilation_cache_dir=path, jax_persistent_cache_min_compile_time_secs=0.0
    )


def _run(config, workdir: str, settings: Settings, echo) -> list[Run]:
    start, runs = time.perf_counter(), []
    for name in settings.tasks:
        for knob in settings.knobs[name]:
            task = diagnostic.Task(name, knob)
            data_root = _dataset(task, workdir, settings)
            for seed in range(settings.seeds):
                for variant in settings.variants:
                    cfg = run_config(config, task, data_root, seed, variant)
                    out = os.path.join(workdir, "runs", f"{name}_{knob}", f"seed{seed}", variant)
                    echo(f"== {name} {diagnostic.KNOB_NAMES[name]}={knob} seed {seed} {variant}")
                    runs.append(Run(name, knob, seed, variant, _train_and_eval(cfg, out)))
    minutes = (time.perf_counter() - start) / 60
    echo(report(runs, settings, workdir, config, minutes))
    return runs


def _dataset(task: diagnostic.Task, workdir: str, settings: Settings) -> str:
    root = os.path.join(workdir, "data", f"{task.name}_{task.knob}")
    if not os.path.exists(os.path.join(root, "classes.txt")):  # written last
        spec = diagnostic.Spec(root, task, videos_per_class=settings.videos_per_class)
        diagnostic.make_dataset(spec, workers=settings.workers)
    return root


def _train_and_eval(cfg, out: str) -> metrics.Predictions:
    path = os.path.join(out, "eval", "predictions.csv")
    if os.path.exists(path):
        return metrics.read_csv(path)
    train_cfg = cfg.copy_and_resolve_references()
    train_cfg.data.val_list = ""  # evaluated once, below
    loop.train(train_cfg, out, echo=loop.silent)
    predictions, _, _, _ = multiview.evaluate_checkpoint(cfg, out)
    multiview.write_report(predictions, os.path.dirname(path))
    return predictions


def _top1s(runs: list[Run], task: str, knob: int, variant: str) -> list[float]:
    """Val top-1 of each seed's run of one variant at one knob of a task."""
    return [r.top1 for r in runs if (r.task, r.knob, r.variant) == (task, knob, variant)]


def _pooled(runs: list[Run], variant: str) -> metrics.Predictions:
    """The runs' predictions of one variant as one set, each video id prefixed by its seed."""
    chosen = sorted((r for r in runs if r.variant == variant), key=lambda r: r.seed)
    ids = np.concatenate([[f"{r.seed}:{v}" for v in r.predictions.video_ids] for r in chosen])
    labels = np.concatenate([r.predictions.labels for r in chosen])
    scores = np.concatenate([r.predictions.scores for r in chosen])
    return metrics.Predictions(ids, labels, scores)


def task_table(runs: list[Run], name: str, settings: Settings) -> str:
    """Val top-1 (mean ± sd over seeds) per variant and knob, then McNemar per knob."""
    knobs = settings.knobs[name]
    head = "| variant | " + " | ".join(f"{diagnostic.KNOB_NAMES[name]} {k}" for k in knobs)
    lines = [head + " |", "|---|" + "---:|" * len(knobs)]
    for variant in settings.variants:
        cells = []
        for k in knobs:
            top1 = _top1s(runs, name, k, variant)
            spread = statistics.stdev(top1) if len(top1) > 1 else 0.0
            cells.append(f"{statistics.mean(top1):.3f} ± {spread:.3f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    if all(v in settings.variants for v in PAIR):
        lines += ["", f"McNemar, {PAIR[0]} vs {PAIR[1]}, seeds pooled:", ""]
        lines += ["| knob | both right | only vmp | only videomamba | both wrong | chi2 | p |"]
        lines += ["|---|---:|---:|---:|---:|---:|---:|"]
        for k in knobs:
            at = [r for r in runs if (r.task, r.knob) == (name, k)]
            m = metrics.mcnemar(_pooled(at, PAIR[0]), _pooled(at, PAIR[1]))
            lines.append(
                f"| {k} | {m.both_correct} | {m.only_a} | {m.only_b} | {m.both_wrong} | "
                f"{m.chi2:.2f} | {m.p_value:.3g} |"
            )
    return "\n".join(lines)


def report(runs: list[Run], settings: Settings, workdir: str, config, minutes: float) -> str:
    """The tables, and the paths of the plots written beside them."""
    parts = [f"diagnostic suite: {len(runs)} runs in {minutes:.1f} min"]
    for name in settings.tasks:
        parts += [f"\n## {name}\n", task_table(runs, name, settings)]
        parts.append(f"\nwrote {plot_accuracy(runs, name, settings, workdir)}")
        parts.append(f"wrote {plot_similarity(name, settings, workdir, config)}")
    text = "\n".join(parts)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(text + "\n")
    return text


def plot_accuracy(runs: list[Run], name: str, settings: Settings, workdir: str) -> str:
    """Val top-1 against the knob, one line per variant (mean over seeds, the seeds as
    points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knobs = settings.knobs[name]
    figure, ax = plt.subplots(figsize=(6, 4))
    for variant in settings.variants:
        means = []
        for k in knobs:
            top1 = _top1s(runs, name, k, variant)
            ax.scatter([k] * len(top1), top1, s=10, alpha=0.5)
            means.append(statistics.mean(top1))
        ax.plot(knobs, means, marker="o", label=variant)
    ax.set(xlabel=diagnostic.KNOB_NAMES[name], ylabel="val top-1", title=name)
    ax.set_xticks(knobs, [str(k) for k in knobs])
    ax.axhline(0.5, color="grey", lw=0.5, ls="--")
    ax.legend(fontsize=8)
    path = os.path.join(workdir, f"{name}_accuracy.png")
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_similarity(name: str, settings: Settings, workdir: str, config) -> str:
    """M_f, M_b, masked M_b and their sum of the last layer (mean over its first 16 channels),
    for seed 0's VideoMamba (top row) and VMP (bottom row) at the task's middle knob (a few
    hundred tokens: readable as pixels), on the same validation clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    from vmp_jax.data import pipeline, sources
    from vmp_jax.evaluate.predict import load_model
    from vmp_jax.models import similarity

    knobs = settings.knobs[name]
    task = diagnostic.Task(name, knobs[len(knobs) // 2])
    data_root = os.path.join(workdir, "data", f"{name}_{task.knob}")
    rows = [v for v in PAIR[::-1] if v in settings.variants]
    results = {}
    for variant in rows:
        cfg = run_config(config, task, data_root, 0, variant)
        out = os.path.join(workdir, "runs", f"{name}_{task.knob}", "seed0", variant)
        model, _, _ = load_model(cfg, out, weights="raw")
        item = sources.open_source(cfg.data, "val")[0]
        video = pipeline.test_views(item, pipeline.ClipSettings.from_config(cfg))  # (1, T, S, S, 3)
        channels = (0, min(16, model.cfg.d_inner))
        results[variant] = similarity.layer_matrices(model, video, model.cfg.depth - 1, channels)
    figure, axes = plt.subplots(len(rows), 4, figsize=(16, 4 * len(rows)), squeeze=False)
    for row, variant in enumerate(rows):
        matrices = results[variant].matrices
        scale = max(float(abs(m).max()) for m in matrices.values()) or 1.0
        norm = SymLogNorm(linthresh=scale * 1e-3, vmin=-scale, vmax=scale)
        for ax, (matrix_name, m) in zip(axes[row], matrices.items(), strict=True):
            ax.imshow(m, cmap="RdBu_r", norm=norm, interpolation="nearest")
            ax.set_title(f"{variant}: {matrix_name}", fontsize=9)
            ax.set_xlabel("source token s")
            ax.set_ylabel("output token t")
    knob = f"{diagnostic.KNOB_NAMES[name]} {task.knob}"
    figure.suptitle(f"{name} ({knob}), last layer, channels 0-15, validation clip 0")
    path = os.path.join(workdir, f"{name}_similarity.png")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
