"""``lcodec train`` / ``lcodec train-context`` / ``lcodec train-grouped``: train (or resume), then optionally export weights."""
from __future__ import annotations

import click

from .context import ContextTrainConfig, train_context
from .grouped import GroupedTrainConfig, train_grouped
from ..models import DEFAULT_LAMBDAS
from ..models.hyperprior import ANALYSIS_BLOCK_AFTER, MAX_DEEP_BLOCKS, SYNTHESIS_BLOCK_AFTER
from .loop import TrainConfig, train


def _parse_lambdas(value: str) -> tuple[float, ...]:
    from .levels import check_lambdas

    try:
        return check_lambdas(float(v) for v in value.split(","))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# Every command's --export can count its tables on the training photos (lcodec.train.counted_tables).
COUNT_TABLES_ON = click.option(
    "--count-tables-on", default=None, type=click.Path(exists=True, file_okay=False),
    help="With --export: count the exported y tables and per-level z tables on the training "
         "photos in this folder (~25 CPU-minutes for ../shared/data/train).")

# Every command's --seed (lcodec.train.data.data_seed).
SEED_HELP = ("Seeds new layers and the data: crops, quality levels and noise are drawn with seed + "
             "step, plus, in a new folder started from trained weights, a fingerprint of them, so "
             "that a run does not replay the draws of the run that made its weights. Each run "
             "records its data seed in its checkpoint.")


@click.command("train")
@click.option("--data", default=TrainConfig.data, show_default=True, help="Folder of training photos.")
@click.option("--extra-data", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Another folder of photos added to the training crops only (repeatable; "
                   "e.g. runs/registry-photos, made by `make runs/registry-photos`): the "
                   "held-out photos stay --data's. A resumed run needs it again.")
@click.option("--run-dir", default=TrainConfig.run_dir, show_default=True,
              help="Checkpoint and log folder; an existing checkpoint there is resumed.")
@click.option("--minutes", default=TrainConfig.minutes, show_default=True, type=float,
              help="Wall-clock budget of this run (the lr decays over its last part).")
@click.option("--max-steps", default=TrainConfig.max_steps, show_default=True, type=int,
              help="Also stop when the run reaches this step (0: no limit).")
@click.option("--family", type=click.Choice(["hyperprior", "context", "grouped"]), default=TrainConfig.family,
              show_default=True,
              help="'context' trains the checkerboard context networks together with the "
                   "transforms (end to end); start it from context weights (--init-from context) "
                   "or from a hyperprior (its context networks then start as none). 'grouped' "
                   "trains a grouped model end to end, from a checkpoint of lcodec train-grouped "
                   "(--adam-from may then name a context run: the group networks start a fresh Adam).")
@click.option("--N", "N", default=TrainConfig.N, show_default=True, type=int)
@click.option("--M", "M", default=TrainConfig.M, show_default=True, type=int,
              help="Latent channels (0: those of the checkpoint resumed or the weights started "
                   "from, else 96). Starting from narrower weights widens them; from wider "
                   "weights keeps the channels they use most.")
@click.option("--Na", "Na", default=TrainConfig.Na, show_default=True, type=int,
              help="Hidden channels of the analysis transform (encoder only; 0: those of the "
                   "checkpoint resumed or the weights started from, else --N). Starting from "
                   "narrower weights widens them losslessly.")
@click.option("--Ns", "Ns", default=TrainConfig.Ns, show_default=True, type=int,
              help="Hidden channels of the synthesis transform (decoder; 0: those of the "
                   "checkpoint resumed or the weights started from, else --N). Starting from "
                   "narrower weights widens them losslessly.")
@click.option("--res-a", "res_a", default=TrainConfig.res_a, show_default=True,
              type=click.IntRange(0, len(ANALYSIS_BLOCK_AFTER)),
              help="Residual blocks in the analysis transform, after its GDN layers from the "
                   "deepest outward (0: those of the checkpoint resumed or the weights started "
                   "from). Blocks added to trained weights start as identities.")
@click.option("--res-s", "res_s", default=TrainConfig.res_s, show_default=True,
              type=click.IntRange(0, len(SYNTHESIS_BLOCK_AFTER)),
              help="Residual blocks in the synthesis transform (the decoder), after its inverse "
                   "GDN layers from the deepest outward; as --res-a.")
@click.option("--res-a-deep", "res_a_deep", default=TrainConfig.res_a_deep, show_default=True,
              type=click.IntRange(0, MAX_DEEP_BLOCKS),
              help="Further residual blocks in the analysis at its deepest position (1/8 "
                   "resolution), after its first block (needs --res-a 1 or more); 0: those "
                   "of the checkpoint resumed or the weights started from. Added as identities.")
@click.option("--res-s-deep", "res_s_deep", default=TrainConfig.res_s_deep, show_default=True,
              type=click.IntRange(0, MAX_DEEP_BLOCKS),
              help="The same in the synthesis (the decoder: each costs decoding time, about "
                   "a quarter of a block at 1/4 resolution); needs --res-s 1 or more.")
@click.option("--level-scales-a", "level_scales_a", is_flag=True, default=False,
              help="Per-level channel scales inside the analysis transform, after its GDN "
                   "layers (kept by a resumed run and by weights that have them; added to "
                   "weights without them as ones, so the model starts where they were). "
                   "Trained at --gain-lr-mult like the gains.")
@click.option("--level-scales-s", "level_scales_s", is_flag=True, default=False,
              help="The same inside the synthesis transform (the decoder), after its inverse "
                   "GDN layers.")
@click.option("--level-scales-h", "level_scales_h", is_flag=True, default=False,
              help="The same inside the hyper-analysis (the encoder's side information), after "
                   "its two leaky ReLUs.")
@click.option("--level-bias-a", "level_bias_a", is_flag=True, default=False,
              help="Per-level channel offsets inside the analysis, added after its level scales "
                   "(which it needs; encoder only). Added to weights without them as zeros.")
@click.option("--lambdas", default=None,
              callback=lambda ctx, param, value: _parse_lambdas(value) if value else None,
              help="The quality levels' rate-distortion trade-offs, comma-separated, increasing "
                   "(level 1 first). Default: those of the run resumed or the weights started "
                   "from, else " + ",".join(f"{v:g}" for v in DEFAULT_LAMBDAS) + ". Starting from "
                   "weights with other levels moves their gains there (interpolated in log lambda).")
@click.option("--crop", default=TrainConfig.crop, show_default=True, type=int)
@click.option("--batch", default=TrainConfig.batch, show_default=True, type=int)
@click.option("--lr", default=TrainConfig.lr, show_default=True, type=float)
@click.option("--gain-lr-mult", default=TrainConfig.gain_lr_mult, show_default=True, type=float,
              help="The quality levels' gain vectors learn at --lr times this (e.g. 10 after "
                   "moving the levels with --lambdas). A run resumes with the value it started with.")
@click.option("--warmup", default=TrainConfig.warmup, show_default=True, type=int)
@click.option("--ste-frac", default=TrainConfig.ste_frac, show_default=True, type=float,
              help="Final fraction of the run in which the decoder sees rounded (not noisy) latents.")
@click.option("--decay-frac", default=TrainConfig.decay_frac, show_default=True, type=float)
@click.option("--threads", default=TrainConfig.threads, show_default=True,
              help="Torch threads, or 'auto' to measure and pick.")
@click.option("--device", default=TrainConfig.device, show_default=True,
              help="auto (CUDA when torch sees a GPU), cpu, cuda or cuda:N.")
@click.option("--bf16", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="bf16 autocast; 'auto' uses it on a GPU that supports it, and on a CPU only "
                   "where it has native bf16.")
@click.option("--compile", type=click.Choice(["auto", "on", "off"]), default=TrainConfig.compile,
              show_default=True,
              help="torch.compile the training step; 'auto' falls back to eager mode if it fails.")
@click.option("--init-from", default=None, help="Start a fresh run from these weights: a weights .pt file, a training "
                   "checkpoint (e.g. another run's best.pt, or its checkpoint.pt: the weight average when it keeps one), or a model name in the manifest (its newest "
                   "version, or NAME:vN for version N). Ignored when the run directory has a checkpoint.")
@click.option("--context-channels", default=0, show_default=True, type=int,
              help="Context family: features of the masked context convolution (0: those of the "
                   "checkpoint resumed or the weights started from, else 96). Starting from "
                   "narrower context weights widens them losslessly.")
@click.option("--context-hidden", default=0, show_default=True, type=int,
              help="Context family: width of the merging network (0: as --context-channels, "
                   "else 192); widened losslessly likewise.")
@click.option("--adam-from", default=None,
              help="With --init-from: carry Adam's moments from this training checkpoint (e.g. "
                   "the checkpoint.pt of the run the weights come from), matched by parameter name and "
                   "widened with the model; parameters it lacks (residual blocks added with "
                   "--res-a / --res-s) start fresh (lcodec/train/adam_state.py). Ignored when the "
                   "run directory has a checkpoint.")
@click.option("--level-weighting", type=click.Choice(["none", "normalized", "sqrt"]),
              default=TrainConfig.level_weighting, show_default=True,
              help="'normalized' divides each quality level's loss by its running mean; 'sqrt' "
                   "by the square root of it.")
@click.option("--reopen-below", default=None, type=float,
              help="With --init-from: start afresh the latent channels whose log-gain at the top "
                   "quality level is below this (e.g. -2: the channels training has shut): the "
                   "open channels' median gains, new random analysis and synthesis filters "
                   "(lcodec/train/reopen.py). Ignored when the run directory has a checkpoint.")
@click.option("--train-only", type=click.Choice(["all", "encoder"]), default=TrainConfig.train_only,
              show_default=True,
              help="encoder: train only the analysis, hyper-analysis and gains; every decoder "
                   "network stays as it started, so the weights decode the same files.")
@click.option("--validate-every", default=TrainConfig.validate_every, show_default=True, type=int,
              help="Steps between held-out validations (bpp, PSNR, BD-rate vs JPEG); the model "
                   "with the best BD-rate so far is kept as RUN_DIR/best.pt.")
@click.option("--ema", default=TrainConfig.ema, show_default=True, type=float,
              help="Keep an exponential moving average of the weights with this decay (e.g. "
                   "0.999; 0: off); validation, best.pt and --export then use the average.")
@click.option("--seed", default=0, show_default=True, type=int, help=SEED_HELP)
@click.option("--export", "export_name", default=None,
              help="After training, export weights/<NAME>.pt and record it in the manifest: the "
                   "run's best.pt (best held-out BD-rate) when there is one, else its last state.")
@COUNT_TABLES_ON
def train_command(export_name: str | None, count_tables_on: str | None, **kwargs) -> None:
    """Train a variable-rate model on the CPU or a CUDA GPU (resumable)."""
    from ..errors import DeviceError

    try:
        ckpt = train(TrainConfig(**kwargs))
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from None
    if export_name:
        from .export import export_checkpoint
        best = ckpt.with_name("best.pt")
        chosen = best if best.exists() else ckpt
        path = export_checkpoint(chosen, export_name, count_tables_on=count_tables_on)
        click.echo(f"exported {chosen} (the best held-out BD-rate of the run) to {path}"
                   if chosen == best else f"exported {path}")


C = ContextTrainConfig


@click.command("train-context")
@click.option("--init-from", required=True,
              help="Hyperprior weights whose transforms the context model keeps: a .pt file, "
                   "or a model name in the manifest (its newest version, or NAME:vN).")
@click.option("--context-from", default=None,
              help="Start the context networks from these context weights (a .pt file, or a "
                   "manifest name or NAME:vN) instead of from scratch. If their hyperprior has other latent "
                   "channels, each channel is matched by its synthesis pattern; new ones start at zero.")
@click.option("--data", default=C.data, show_default=True, help="Folder of training photos.")
@click.option("--run-dir", default=C.run_dir, show_default=True,
              help="Checkpoint and log folder; an existing checkpoint there is resumed.")
@click.option("--minutes", default=C.minutes, show_default=True, type=float,
              help="Wall-clock budget of this run (the lr decays over its last part).")
@click.option("--crop", default=C.crop, show_default=True, type=int, help="Crop size in pixels.")
@click.option("--batch", default=C.batch, show_default=True, type=int)
@click.option("--lr", default=C.lr, show_default=True, type=float)
@click.option("--context-channels", default=C.context_channels, show_default=True, type=int)
@click.option("--hidden", default=C.hidden, show_default=True, type=int)
@click.option("--threads", default=C.threads, show_default=True, type=int)
@click.option("--seed", default=C.seed, show_default=True, type=int, help=SEED_HELP)
@click.option("--export", "export_name", default=None,
              help="After training, export weights/<NAME>.pt and record it in the manifest.")
@COUNT_TABLES_ON
def train_context_command(export_name: str | None, count_tables_on: str | None, **kwargs) -> None:
    """Train the checkerboard context model on top of frozen hyperprior weights."""
    ckpt = train_context(ContextTrainConfig(**kwargs))
    if export_name:
        from .export import export_checkpoint
        path = export_checkpoint(ckpt, export_name, make_default=False, count_tables_on=count_tables_on)
        click.echo(f"exported {path}")


G = GroupedTrainConfig


def _parse_groups(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        groups = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give channel counts separated by commas, e.g. 16,16,32,64,64") from None
    if len(groups) < 2 or min(groups) < 1:
        raise click.BadParameter("give at least two positive channel counts")
    return groups


@click.command("train-grouped")
@click.option("--init-from", required=True,
              help="Context weights whose every network the grouped model keeps, or grouped "
                   "weights whose group networks training continues: a manifest name (its "
                   "newest version, or NAME:vN such as grouped:v5) or a training checkpoint of either family.")
@click.option("--data", default=G.data, show_default=True, help="Folder of training photos.")
@click.option("--run-dir", default=G.run_dir, show_default=True,
              help="Checkpoint and log folder; an existing checkpoint there is resumed.")
@click.option("--minutes", default=G.minutes, show_default=True, type=float,
              help="Wall-clock budget of this run (the lr decays over its last part).")
@click.option("--crop", default=G.crop, show_default=True, type=int, help="Crop size in pixels.")
@click.option("--batch", default=G.batch, show_default=True, type=int)
@click.option("--lr", default=G.lr, show_default=True, type=float)
@click.option("--warmup", default=G.warmup, show_default=True, type=int)
@click.option("--decay-frac", default=G.decay_frac, show_default=True, type=float)
@click.option("--groups", default=None, callback=_parse_groups,
              help="Channels per group, in coding order (sum: M); default 16,16,32,64,64, or "
                   "a grouped start's own (which it must keep).")
@click.option("--group-features", default=None, type=click.IntRange(min=1),
              help="Features of each group network's 3x3 convolution; default 64, or a grouped "
                   "start's own (more widens its networks without changing what they compute).")
@click.option("--group-hidden", default=None, type=click.IntRange(min=1),
              help="Hidden units of each group network's merging layers; default 128, or a "
                   "grouped start's own (more widens them the same way).")
@click.option("--validate-every", default=G.validate_every, show_default=True, type=int)
@click.option("--threads", default=G.threads, show_default=True, type=int)
@click.option("--seed", default=G.seed, show_default=True, type=int, help=SEED_HELP)
@click.option("--export", "export_name", default=None,
              help="After training, export weights/<NAME>.pt and record it in the manifest.")
@click.option("--export-base", default="context", show_default=True,
              help="The shipped model whose frozen networks the export shares: its file then "
                   "holds only the group networks and names that base ('' for a whole file).")
@COUNT_TABLES_ON
def train_grouped_command(export_name: str | None, export_base: str, count_tables_on: str | None,
                          **kwargs) -> None:
    """Train channel-group context networks on top of frozen context weights."""
    ckpt = train_grouped(GroupedTrainConfig(**kwargs))
    if export_name:
        from .export import export_checkpoint
        path = export_checkpoint(ckpt, export_name, make_default=False, base=export_base or None,
                                 count_tables_on=count_tables_on)
        click.echo(f"exported {path}")


if __name__ == "__main__":
    train_command()
