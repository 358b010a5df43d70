"""The noisefix command line: options -> config dataclass -> one stage function -> report.

The only module that imports typer. Library errors (NoisefixError) become one red line and exit code 1.
"""

from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from noisefix.config import TrainConfig
from noisefix.errors import NoisefixError, describe_os_error, one_line
from noisefix.ui.reporter import RichReporter, pct

app = typer.Typer(
    name="noisefix",
    help="Find and fix wrong labels in image-classification datasets with MASC subspace probes.\n\n"
         "Stages: train -> probe -> relabel -> retrain (or `clean` for all of it); `demo` runs them on "
         "scikit-learn's digits with synthetic noise.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
data_app = typer.Typer(help="Built-in datasets: export them as image folders, optionally with noisy labels.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        from noisefix import __version__

        typer.echo(f"noisefix {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass

console = Console()
err_console = Console(stderr=True)


def handle_errors(fn):
    """Turn a NoisefixError, or an OSError (a full disk, a read-only or forbidden folder), into one red line on
    stderr and exit code 1; Ctrl-C into exit 130. Names that are not UTF-8 print with backslash escapes, and
    Pillow's decompression-bomb warning fails the image it is about instead of printing extra lines."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import warnings

        from PIL import Image

        _escape_unencodable()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                # Pillow's notes on damaged files (corrupt EXIF, short TIFF tags): the decode error says it
                warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
                return fn(*args, **kwargs)
        except NoisefixError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(describe_os_error(exc))
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]: nothing half-written was kept; re-run the command")
            raise typer.Exit(130) from None

    return wrapper


def _fail(message: str) -> None:
    """The one red `error:` line (the message printed literally, never read as markup) and exit code 1."""
    err_console.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1) from None


def _escape_unencodable() -> None:
    """Print characters the terminal's encoding cannot hold (a file name that is not UTF-8) as backslash escapes
    instead of failing with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def bold(value) -> str:
    """`value` (a path, a name from the user) in bold, printed literally: `[x]` in a name is not markup."""
    return f"[bold]{escape(str(value))}[/]"


def single_process(fn):
    """Refuse to run under torchrun with WORLD_SIZE > 1: only train and probe split work over processes; any
    other command would run once per rank, every rank writing the same files."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from noisefix.errors import ConfigError
        from noisefix.nn import distributed

        if distributed.world_size() > 1:
            name = fn.__name__.replace("_", " ")
            raise ConfigError(f"`noisefix {name}` runs in one process, but it was launched with "
                              f"WORLD_SIZE={distributed.world_size()} (torchrun), where every process would write "
                              f"the same files; run it without torchrun (only train and probe use several processes)")
        return fn(*args, **kwargs)

    return wrapper


def next_step(text: str, *alternatives: str) -> None:
    """The command to run next (and alternatives, each on an `or:` line), printed literally and unbroken (the
    terminal wraps a long one, so a copy of it is still one command line)."""
    console.print(f"next: [bold cyan]{escape(text)}[/]", highlight=False, soft_wrap=True)
    for alt in alternatives:
        console.print(f"  or: [bold cyan]{escape(alt)}[/]", highlight=False, soft_wrap=True)


DataArg = Annotated[Path, typer.Argument(help="Image folder: DATA/<class>/<img> or DATA/train|test/<class>/<img>.")]
LabelsOpt = Annotated[Optional[Path], typer.Option(
    "--labels", help="Labels file overriding folder labels: CSV `path,label[,clean_label]` or `path label` lines.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing outputs.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also print the memory plan: each layer's "
                                          "route and where its activations live, and extraction times.")]
ReviewOpt = Annotated[int, typer.Option("--review", help="Write relabel/review.html (and review.png) with the N "
                                        "most suspicious images; 0: none.")]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", help="Pretrained start: DEFAULT or a torchvision weights name (IMAGENET1K_V1, ...; from the torch "
    "hub cache), or a state-dict file (.safetensors, .pt/.pth loaded weights_only). The head is replaced for "
    "the data's classes; resnet18/alexnet with weights are torchvision's (ImageNet stem).")]
ImageSizeOpt = Annotated[Optional[str], typer.Option(
    "--image-size", help="Resize every image (shorter side, then centre crop) to S or HxW (default: the weights' "
    "size, else the data's median size; equal-sized images are left as they are).")]
ChannelsOpt = Annotated[str, typer.Option(
    "--channels", help="auto (1 when nearly all images are grayscale; 3 for RGB weights), 1 or 3.")]
WorkersOpt = Annotated[Optional[int], typer.Option(
    "--workers", help="DataLoader processes decoding images (default min(4, CPUs-1); 0: in this process).")]
ClassesOpt = Annotated[Optional[Path], typer.Option(
    "--classes", help="Class names, one per line, in index order: an index label i in --labels means line i "
    "(default: the sorted class folder names).")]
ScreenOpt = Annotated[int, typer.Option("--screen", help="Cross-fit MASC, logreg and VeLPIC only on the N layers "
                                       "per checkpoint where their quick fit on a per-class sample agrees best with "
                                       "held-out labels; NCM on every layer (0: everywhere).")]
NormalizeOpt = Annotated[bool, typer.Option(
    "--normalize/--no-normalize", help="Per-dataset mean/std for models trained here (pretrained weights always "
    "use their own).")]


def _image_config(image_size, channels, workers, normalize=True):
    from noisefix.config import ImageConfig

    return ImageConfig(image_size=image_size, channels=channels, workers=workers, normalize=normalize)


@app.command()
@handle_errors
def train(
    data: DataArg,
    model: Annotated[str, typer.Option("--model", help="mlp, cnn, alexnet, resnet18 (paper variants) or any "
                                       "torchvision classifier name.")] = "mlp",
    labels: LabelsOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default runs/<data>-<model>-<time>).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Epoch cap.")] = 500,
    target_acc: Annotated[float, typer.Option("--target-acc", help="Stop when the running train accuracy on the "
                                              "given labels reaches this.")] = 1.0,
    optimizer: Annotated[Optional[str], typer.Option("--optimizer", help="sgd or adam (default: the paper's for the model).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: the paper's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size (default: the paper's).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    save_every: Annotated[int, typer.Option("--save-every", help="Also keep a checkpoint every E epochs (epoch 0 "
                                            "is always kept).")] = 0,
    early: Annotated[bool, typer.Option("--early-checkpoints/--no-early-checkpoints", help="Keep the checkpoints of "
                                        "epochs 2, 4, 8, ... 64, which `probe --checkpoints all` scans: the "
                                        "true-label structure peaks early, before the labels are memorized.")] = True,
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    channels: ChannelsOpt = "auto",
    workers: WorkersOpt = None,
    classes: ClassesOpt = None,
    normalize: NormalizeOpt = True,
    holdout: Annotated[float, typer.Option("--holdout", help="Fraction of the training images (stratified) kept "
                                           "out of training, so probes can pick a layer from labels alone.")] = 0.1,
    on_bad_image: Annotated[str, typer.Option("--on-bad-image", help="fail (default) or skip unreadable images "
                                              "(listed in the run; refused over 10 % of the data).")] = "fail",
    force: ForceOpt = False,
) -> None:
    """Train a model on a (possibly noisy) labeled image folder until it memorizes the labels."""
    from noisefix.stages.pipeline import early_checkpoints
    from noisefix.stages.train import run_train

    cfg = TrainConfig.for_model(model, epochs=epochs, target_acc=target_acc, optimizer=optimizer, lr=lr,
                                batch_size=batch_size, seed=seed, device=device, save_every=save_every,
                                save_epochs=early_checkpoints(epochs) if early else (), holdout=holdout,
                                on_bad_image=on_bad_image)
    result = run_train(data, cfg, labels_file=labels, out=out, weights=weights, force=force,
                       reporter=RichReporter(console), classes_file=classes,
                       image=_image_config(image_size, channels, workers, normalize))
    console.print(f"trained {result.epochs} epochs in {result.seconds:.0f}s: train acc {pct(result.train_acc)}, "
                  f"test acc {pct(result.test_acc)} (best checkpoint: epoch {result.best_epoch}, test acc "
                  f"{pct(result.best_test_acc)})" if result.test_acc is not None else
                  f"trained {result.epochs} epochs in {result.seconds:.0f}s: train acc {pct(result.train_acc)}")
    console.print(f"run: {bold(result.run.path)}")
    saved = [e for e in cfg.save_epochs if e < result.epochs]
    if saved:  # the early checkpoints first (what cleaning should read), the paper's final-model probe second
        next_step(f"noisefix probe {data} --run {result.run.path} --checkpoints all --screen 2 --probes masc,ncm",
                  f"noisefix probe {data} --run {result.run.path}")
    else:
        next_step(f"noisefix probe {data} --run {result.run.path}")


@data_app.command("export")
@handle_errors
@single_process
def data_export(
    name: Annotated[str, typer.Argument(help="digits, mnist, fashion-mnist, cifar10 or cifar100.")],
    dest: Annotated[Path, typer.Argument(help="Folder to write (DEST/train/<class>/..., DEST/test/<class>/...).")],
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Where the raw files are (else "
                                                      "$NOISEFIX_DATA, system places, download).")] = None,
    corrupt: Annotated[Optional[float], typer.Option("--corrupt", help="Write noisy_labels.csv with this "
                                                     "corruption probability.")] = None,
    noise: Annotated[str, typer.Option("--noise", help="symmetric (paper) or pairflip.")] = "symmetric",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    train_subset: Annotated[Optional[int], typer.Option("--train-subset", help="Keep N training images.")] = None,
    test_subset: Annotated[Optional[int], typer.Option("--test-subset", help="Keep N test images.")] = None,
    cifar_n: Annotated[Optional[Path], typer.Option("--cifar-n", help="CIFAR-N label file (CIFAR-10_human.pt, "
                                                    "CIFAR-100_human.pt): its human labels go to noisy_labels.csv.")] = None,
    cifar_n_set: Annotated[Optional[str], typer.Option("--cifar-n-set", help="Which human labels: worse, aggre, "
                                                       "random1..3 (CIFAR-10N; default worse) or noisy (CIFAR-100N).")] = None,
    force: ForceOpt = False,
) -> None:
    """Write a built-in dataset as an image folder (and noisy labels with --corrupt or --cifar-n)."""
    from noisefix.data.builtin import export_dataset, load_builtin
    from noisefix.data.cifar_n import read_cifar_n

    if cifar_n_set is not None and cifar_n is None:
        from noisefix.errors import ConfigError

        raise ConfigError("--cifar-n-set picks labels of a CIFAR-N file; give the file with --cifar-n")
    ds = load_builtin(name, data_root=data_root)
    human = None if cifar_n is None else read_cifar_n(cifar_n, name, ds.y_train, len(ds.classes), cifar_n_set)
    path = export_dataset(ds, dest, corrupt=corrupt, noise=noise, seed=seed, train_subset=train_subset,
                          test_subset=test_subset, force=force, noisy_labels=human)
    console.print(f"wrote {name} to {bold(path)}")
    if corrupt is not None or human is not None:
        next_step(f"noisefix clean {path} --labels {path / 'noisy_labels.csv'}")
    else:
        next_step(f"noisefix clean {path}")


RunOpt = Annotated[Optional[Path], typer.Option("--run", help="Run directory (default: the newest under runs/).")]


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@app.command()
@handle_errors
@single_process
def layers(
    run: RunOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Pick the newest run of this model.")] = None,
    all_nodes: Annotated[bool, typer.Option("--all", help="List every graph node, not only the default layers.")] = False,
    memory: Annotated[bool, typer.Option("--memory", help="Add the probe's route and memory per layer: class "
                                         "statistics (F*K*d^2*8 bytes only where a probe needs d^2 moments), "
                                         "activations (N*d*4 bytes, in RAM or on disk) and probe work.")] = False,
    folds: Annotated[int, typer.Option("--folds", help="Folds assumed by --memory.")] = 5,
    probes: Annotated[str, typer.Option("--probes", help="Probes assumed by --memory.")] = "masc,ncm,logreg,velpic",
    pool: Annotated[str, typer.Option("--pool", help="Pooling assumed by --memory (as for probe).")] = "auto",
    cache: Annotated[str, typer.Option("--cache", help="Activation cache mode assumed by --memory (as for probe).")] = "auto",
) -> None:
    """List the probe-able layers of a run's model (FX node names, output shapes, flattened dims)."""
    from noisefix.stages.layers import list_layers_of_run
    from noisefix.stages.runs import open_run

    loaded = open_run(run, model=model, reporter=RichReporter(console))
    listing = list_layers_of_run(loaded, all_nodes=all_nodes, memory=memory, folds=folds, probes=_split(probes),
                                 pool=pool, cache=cache)
    RichReporter(console).table(listing.title, listing.columns, listing.rows)
    if listing.memory_note:
        console.print(listing.memory_note, highlight=False)
    next_step(f"noisefix probe --run {loaded.run.path} --layers {','.join(listing.example(4))}")


@app.command()
@handle_errors
def probe(
    data: Annotated[Optional[Path], typer.Argument(help="The run's image folder (default: the one it was trained on).")] = None,
    run: RunOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Pick the newest run of this model; with --weights, "
                                                 "the pretrained architecture to probe without training.")] = None,
    weights: Annotated[Optional[str], typer.Option(
        "--weights", help="Probe a pretrained network without training (needs DATA and --model): DEFAULT, a "
        "torchvision weights name or a state-dict file; writes a new run that `relabel` then uses.")] = None,
    labels: LabelsOpt = None,
    classes: ClassesOpt = None,
    image_size: ImageSizeOpt = None,
    channels: ChannelsOpt = "auto",
    workers: WorkersOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="With --weights: the new run directory (default "
                                                "runs/<data>-<model>-pretrained-<time>).")] = None,
    on_bad_image: Annotated[str, typer.Option("--on-bad-image", help="With --weights: fail or skip unreadable images.")] = "fail",
    layers: Annotated[str, typer.Option("--layers", help="default, all, or comma-separated node names (see `noisefix layers`).")] = "default",
    probes: Annotated[str, typer.Option("--probes", help="Comma-separated: masc, ncm, logreg, velpic.")] = "masc,ncm,logreg,velpic",
    folds: Annotated[int, typer.Option("--folds", help="Cross-fitting folds.")] = 5,
    variance: Annotated[float, typer.Option("--variance", help="MASC explained-variance threshold (>= 1: fixed component count).")] = 0.99,
    pool: Annotated[str, typer.Option("--pool", help="none, avg:S (pool conv maps to SxS) or auto (pool only layers over 16,384 dims).")] = "auto",
    checkpoint: Annotated[str, typer.Option("--checkpoint", "--checkpoints", help="final, best, init, an epoch, a comma list, or all.")] = "final",
    screen: ScreenOpt = 0,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per extraction batch (default: 256-4096 by the size of the layers' outputs).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    cache: Annotated[str, typer.Option("--cache", help="auto (cache a layer's activations on disk when they do not "
                                       "fit the RAM budget), always or never.")] = "auto",
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where the activation cache goes (default "
                                                      "RUN/probe-cache); deleted afterwards.")] = None,
    keep_cache: Annotated[bool, typer.Option("--keep-cache", help="Keep the activation cache (safetensors shards).")] = False,
    verbose: VerboseOpt = False,
    force: ForceOpt = False,
) -> None:
    """Score every layer x probe with cross-fitted predictions; pick the best layer from the labels alone."""
    from noisefix.config import ProbeConfig
    from noisefix.stages.backbone import probe_target
    from noisefix.stages.probe import run_probe

    cfg = ProbeConfig(layers=layers, probes=_split(probes), folds=folds, variance=variance, pool=pool,
                      checkpoints=_split(checkpoint), batch_size=batch_size, seed=seed, device=device, cache=cache,
                      workers=workers, screen=screen)
    reporter = RichReporter(console, verbose=verbose)
    loaded = probe_target(data, run=run, model=model, weights=weights, labels_file=labels, classes_file=classes,
                          image=_image_config(image_size, channels, workers), out=out, seed=seed,
                          on_bad_image=on_bad_image, force=force, reporter=reporter)
    result = run_probe(loaded, cfg, force=force, reporter=reporter, cache_dir=cache_dir,
                       keep_cache=keep_cache)
    reporter.show_scores(result)
    console.print(f"probe results: {bold(result.out)} (scores.csv, scores.json, layers.png) in {result.seconds:.0f}s")
    next_step(f"noisefix relabel --run {loaded.run.path}")


def _count_or_fraction(text: str | None, option: str) -> int | float | None:
    """An option value that is a count (an integer) or a fraction (a number below 1)."""
    from noisefix.errors import ConfigError

    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{option} must be a count or a fraction below 1, got {text!r}") from None
    return int(value) if value.is_integer() else value


@app.command()
@handle_errors
@single_process
def relabel(
    run: RunOpt = None,
    layer: Annotated[str, typer.Option("--layer", help="best (label-only pick) or a probed layer name.")] = "best",
    probe: Annotated[Optional[str], typer.Option("--probe", help="masc, ncm, logreg or velpic (default: the best by agreement).")] = None,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="Restrict to one probed checkpoint.")] = None,
    min_margin: Annotated[float, typer.Option("--min-margin", help="Flag only when the suggested class beats the given one by this score margin.")] = 0.0,
    mode: Annotated[str, typer.Option("--mode", help="relabel (replace flagged labels) or prune (drop flagged images).")] = "relabel",
    ensemble: Annotated[int, typer.Option("--ensemble", help="Combine the N best layer x probe scores by the label-only "
                                          "criterion (3 measured better than 1 on digits, MNIST and Fashion-MNIST, "
                                          "docs/results.md, docs/cleaning.md).")] = 3,
    flag: Annotated[str, typer.Option("--flag", help="noise-aware: flag about the estimated number of wrong labels per "
                                      "class, lowest label quality first; disagree: every image the probe disagrees with.")] = "noise-aware",
    max_issues: Annotated[Optional[str], typer.Option("--max-issues", help="Flag at most N images, or a FRACTION "
                                                      "(below 1) of them, lowest label quality first.")] = None,
    min_suggest: Annotated[float, typer.Option("--min-suggest", help="Suggest a label only when its posterior "
                                               "probability reaches this (1: never); weaker flags are left for review.")] = 0.5,
    calibrate: Annotated[str, typer.Option("--calibrate", help="test: calibrate the probabilities on the test split's "
                                           "labels, taken as clean, when there is one; given: on the given labels "
                                           "only (use it when the test labels are as noisy).")] = "test",
    review: ReviewOpt = 100,
    force: ForceOpt = False,
) -> None:
    """Score every label's quality, flag the likely wrong ones and write corrected labels from the cross-fitted probe scores."""
    from noisefix.config import RelabelConfig
    from noisefix.io.run_dir import RelabelDir
    from noisefix.stages.relabel import run_relabel
    from noisefix.stages.runs import open_run

    cfg = RelabelConfig(layer=layer, probe=probe, checkpoint=checkpoint, min_margin=min_margin, mode=mode,
                        ensemble=ensemble, flag=flag, max_issues=_count_or_fraction(max_issues, "--max-issues"),
                        min_suggest=min_suggest, review=review, calibrate=calibrate)
    reporter = RichReporter(console)
    loaded = open_run(run, stage="probe", reporter=reporter)
    result = run_relabel(loaded, cfg, force=force, reporter=reporter)
    reporter.show_relabel(result.summary)
    reporter.show_issues(result.top_issues, n_issues=result.summary["n_issues"],
                         where=str(RelabelDir(result.out).issues))
    _print_outputs(result)
    next_step(f"noisefix retrain --run {loaded.run.path}")


def _print_outputs(relabeled) -> None:
    """Where relabel's files are: the issues, the cleaned labels, the review page."""
    from noisefix.io.run_dir import RelabelDir

    console.print(f"issues: {bold(RelabelDir(relabeled.out).issues)}  cleaned labels: {bold(relabeled.cleaned)}")
    if relabeled.review is not None:
        console.print(f"review: {bold(relabeled.review)} (open in a browser; contact sheet: review.png)")


@app.command()
@handle_errors
@single_process
def retrain(
    run: RunOpt = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epoch cap (default: the run's).")] = None,
    start: Annotated[str, typer.Option("--from", help="scratch or memorized (start from the run's final weights).")] = "scratch",
    patience: Annotated[int, typer.Option("--patience", help="Stop after this many epochs without held-out improvement.")] = 10,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Also retrain on the given labels the "
                                           "same way, to measure the gain due to cleaning alone.")] = True,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Retrain the run's architecture on the cleaned labels and measure the test-accuracy gain."""
    from noisefix.config import RetrainConfig
    from noisefix.stages.retrain import run_retrain
    from noisefix.stages.runs import open_run

    cfg = RetrainConfig(epochs=epochs, start=start, patience=patience, seed=seed, device=device, baseline=baseline)
    reporter = RichReporter(console)
    loaded = open_run(run, stage="relabel", reporter=reporter)
    result = run_retrain(loaded, cfg, force=force, reporter=reporter)
    reporter.show_retrain(result.metrics)
    console.print(f"retrain results: {bold(result.out / 'metrics.json')}")


@app.command()
@handle_errors
@single_process
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where the demo writes its data and run.")] = Path("demo-out"),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    verbose: VerboseOpt = False,
    force: ForceOpt = False,
) -> None:
    """train -> probe -> relabel -> retrain on scikit-learn's digits with 40 % symmetric label noise."""
    from noisefix.stages.pipeline import run_demo

    reporter = RichReporter(console, verbose=verbose)
    result = run_demo(out, force=force, seed=seed, reporter=reporter)
    reporter.show_pipeline(result, top=12)
    console.print(f"demo outputs: {bold(out)} (run in {escape(str(out / 'run'))})")
    next_step(f"noisefix relabel --run {out / 'run'} --ensemble 5 --force")


@app.command()
@handle_errors
@single_process
def clean(
    data: DataArg,
    model: Annotated[str, typer.Option("--model", help="Architecture; auto: mlp_small for images of at most "
                                       "32x32x3 values, else resnet18; on Clothing1M's folder without --weights, "
                                       "resnet50 with its ImageNet weights (any torchvision name works).")] = "auto",
    labels: LabelsOpt = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Train this many epochs (default: about 750 "
                                                  "steps, 2 to 32 epochs); checkpoints at 2, 4, 8, ... are "
                                                  "probed (no need to wait for memorization).")] = None,
    optimizer: Annotated[Optional[str], typer.Option("--optimizer", help="adam or sgd (default adam).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default 1e-3).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Training batch (default 128).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    screen: ScreenOpt = 2,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run directory (default runs/<data>-clean-<time>).")] = None,
    probes: Annotated[str, typer.Option("--probes", help="Probes to scan (logreg is slower).")] = "masc,ncm",
    do_retrain: Annotated[bool, typer.Option("--retrain", help="Also retrain on the cleaned labels and measure the gain.")] = False,
    on_bad_image: Annotated[str, typer.Option("--on-bad-image", help="fail or skip unreadable images.")] = "fail",
    weights: WeightsOpt = None,
    image_size: ImageSizeOpt = None,
    channels: ChannelsOpt = "auto",
    workers: WorkersOpt = None,
    classes: ClassesOpt = None,
    normalize: NormalizeOpt = True,
    review: ReviewOpt = 100,
    keep_checkpoints: Annotated[bool, typer.Option("--keep-checkpoints", help="Keep every saved checkpoint (default: "
                                                   "only the final weights and those relabel used).")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    verbose: VerboseOpt = False,
    force: ForceOpt = False,
) -> None:
    """One shot: short training with early checkpoints, probe them all, write cleaned labels and ranked issues.

    With --weights the pretrained network is fine-tuned, and itself scored as checkpoint 0."""
    import time

    from noisefix.stages.pipeline import run_clean

    out = out or Path("runs") / f"{data.resolve().name}-clean-{time.strftime('%Y%m%d-%H%M%S')}"
    reporter = RichReporter(console, verbose=verbose)
    result = run_clean(data, out, model=model, labels_file=labels, epochs=epochs, probes=_split(probes),
                       retrain=do_retrain, seed=seed, force=force, on_bad_image=on_bad_image, reporter=reporter,
                       optimizer=optimizer, lr=lr, batch_size=batch_size, device=device, screen=screen,
                       weights=weights, image=_image_config(image_size, channels, workers, normalize),
                       classes_file=classes, review=review, keep_checkpoints=keep_checkpoints)
    reporter.show_pipeline(result, top=12)
    _print_outputs(result.relabel)
    console.print(f"plots: {bold(result.probe.out / 'dynamics.png')}, {bold(result.probe.out / 'layers.png')}")
    _clean_next_steps(data, result, weights)


def _clean_next_steps(data: Path, result, weights) -> None:
    """After clean: retrain with early stopping (measures the gain), or train a model of one's own on the
    cleaned labels with a stop before it memorizes what noise is left; never the memorizing default."""
    from noisefix.io.atomic import read_json

    run = result.train.run
    arch = read_json(run.model_json)["arch"]
    own = (f"noisefix train {data} --labels {result.relabel.cleaned} --model {arch} --epochs 50 --target-acc 0.95"
           + (f" --weights {weights}" if weights is not None else ""))
    if result.retrain is None:
        next_step(f"noisefix retrain --run {run.path}", own)
    else:
        next_step(own)


@app.command()
@handle_errors
@single_process
def reproduce(
    recipe: Annotated[Path, typer.Argument(help="A recipe YAML, e.g. recipes/mlp_mnist.yaml.")],
    corruption: Annotated[Optional[list[float]], typer.Option("--corruption", help="Only these degrees (repeatable).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Use the recipe's quick: block (subset, epoch cap).")] = False,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Seeds per degree (default: the recipe's).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default reproduce/<recipe>[-quick]).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Where the dataset's raw files are.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write the report again over an existing one (finished "
                                        "runs are reused).")] = False,
) -> None:
    """Run a paper benchmark (train -> probe -> relabel -> retrain per degree) and report it beside the paper."""
    from noisefix.config import load_recipe
    from noisefix.stages.reproduce import run_reproduce

    spec = load_recipe(recipe)
    out = out or Path("reproduce") / (spec.name + ("-quick" if quick else ""))
    result = run_reproduce(spec, out, corruptions=tuple(corruption) if corruption else None, seeds=seeds,
                           data_root=data_root, quick=quick, force=force, reporter=RichReporter(console))
    console.print(f"report: {bold(result.report)} (+ report.json, report.png); finished runs are reused on re-run")


def _terminate(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    import warnings

    from noisefix.nn import distributed

    if not sys.warnoptions:  # library warnings (numpy, torch) are not for users; python -W / PYTHONWARNINGS still work
        warnings.simplefilter("ignore")
    signal.signal(signal.SIGTERM, _terminate)  # `kill` cleans up like Ctrl-C: no half-written outputs
    console.quiet = not distributed.is_main()  # under torchrun only rank 0 reports (errors still show on all)
    app(prog_name="noisefix")


if __name__ == "__main__":
    main()
