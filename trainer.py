"""Training and testing of RAM: REINFORCE with a baseline, ReduceOnPlateau, early stopping,
validation every epoch, resumable checkpoints, and the test of a trained model.

The episode and its loss are model.rollout_loss; checkpoint files are checkpoint.py's. Every
epoch appends one line to <logs_dir>/<name>.log and one JSON record to <name>_metrics.jsonl,
which plot_glimpses.py draws the learning curves from.
"""
import json
import math
import os
import pickle
import signal
import sys
import time

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn as nn
from tqdm import tqdm

import checkpoint
from config import DIR_KEYS
from model import SearchMeter, build_model, evaluate, rollout_loss
from utils import (RamError, check_batch_split, check_not_pretrained, ensure_dir, get_logger,
                   init_distributed, model_name)

# Validation draws its fixations from this seed: every epoch is validated on the same draws,
# and training's random stream never sees them.
VALID_NOISE_SEED = 1
REFRESH = 50  # batches between progress-bar updates of loss and accuracy (a host sync each)


class EpisodeLayer(nn.Layer):
    """A whole training episode (model.rollout_loss, M = 1) as one layer's forward:
    paddle.DataParallel arms its gradient all-reduce in the forward of the layer it wraps,
    and the model's own forward is a single glimpse."""

    def __init__(self, model, config):
        super().__init__()
        self.model, self.config = model, config

    def forward(self, x, y, l_0=None, noise=None):
        c = self.config
        return rollout_loss(self.model, x, y, c.num_glimpses, 1, c.reinforce_weight, l_0, noise,
                            rollouts=c.rollouts, baseline="loo" if c.rollouts > 1 else "learned")


class Trainer:
    """Trains or tests the model a config describes.

    config: from config.get_config (or resumed_config / tested_config); state: the checkpoint
    dict to resume or test (checkpoint.load), read from `ckpt_file`; restart_lr: on resume,
    start a fresh lr schedule at --init_lr instead of the checkpoint's; default_std: a test
    runs at the checkpoint's own eval std (not --eval_std), which its record says; notes:
    lines to log first; plot_curves(metrics_file, out_png): draws the learning curves when
    training ends.

    Started by paddle.distributed.launch, every process builds a Trainer: the training step
    runs under paddle.DataParallel, metrics are summed over the ranks, and only rank 0 logs
    and writes files. Checkpoints hold the bare model, so any number of ranks can resume them.
    """

    def __init__(self, config, device="cpu", state=None, ckpt_file=None, restart_lr=False,
                 default_std=True, notes=(), plot_curves=None):
        self.config, self.device, self.ckpt_file = config, device, ckpt_file
        self.default_std = default_std  # a test at the checkpoint's own eval std (records)
        self._draw_curves = plot_curves
        self.rank, self.world = init_distributed()
        self.is_main = self.rank == 0
        self.name = model_name(config)
        if config.is_train:
            check_batch_split(config.batch_size, self.world)
            if self.is_main:
                self._prepare_output_dirs(fresh=state is None)
        self.logger = self._open_log()
        threads = f" ({os.environ.get('MKL_NUM_THREADS')} MKL threads)" if device == "cpu" else ""
        self.logger.info(f"[*] Device: {device}{threads}")
        for note in notes:
            self.logger.info(note)
        self.model = build_model(config)
        self.net = EpisodeLayer(self.model, config)
        if self.world > 1:
            self.logger.info(f"[*] Data parallel: {self.world} processes, "
                             f"{config.batch_size // self.world} images each per global batch "
                             f"of {config.batch_size}")
            # Broadcasts rank 0's initial weights, then all-reduces (averages) the gradients.
            self.net = paddle.DataParallel(self.net)
            # Same weights, but each rank draws its own locations.
            paddle.seed(int(np.random.SeedSequence([config.random_seed, self.rank])
                            .generate_state(1)[0]))
        self.scheduler = paddle.optimizer.lr.ReduceOnPlateau(
            learning_rate=config.init_lr, mode="max", factor=config.lr_factor,
            patience=config.lr_patience)
        self.optimizer = paddle.optimizer.Adam(
            learning_rate=self.scheduler, parameters=self.model.parameters(),
            use_multi_tensor=True,
            grad_clip=nn.ClipGradByGlobalNorm(config.clip_grad) if config.clip_grad else None)
        self.epoch, self.best_valid_acc, self.counter, self.elapsed = 0, 0.0, 0, 0.0
        self.position = None      # where an interrupted epoch stopped (resume from there)
        self.last_good = None     # the newest epoch or interrupted checkpoint on disk
        self.stopped_by = None    # the signal that stopped training
        self._in_step, self._progress = False, None
        if state is not None:
            self._restore(state, restart_lr)

    # ---------------------------------------------------------------- set-up
    def _prepare_output_dirs(self, fresh):
        """Before training writes anything: the folders exist and take files, none of them is
        a shipped one, and a new run does not take over another run's checkpoints."""
        c = self.config
        for flag in ("--ckpt_dir", "--logs_dir", "--plot_dir"):
            check_not_pretrained(getattr(c, flag[2:]), flag)
        ensure_dir(c.ckpt_dir, "--ckpt_dir")
        ensure_dir(c.logs_dir, "--logs_dir")
        try:
            ensure_dir(c.plot_dir, "--plot_dir")
        except RamError as e:
            print(f"[!] {e}; training goes on without plots")
        if fresh and self.name in checkpoint.models_in(c.ckpt_dir):
            raise RamError(f"{c.ckpt_dir} already holds checkpoints of {self.name} "
                           f"({checkpoint.describe_folder(c.ckpt_dir)}); continue that run with "
                           "--resume=True, or train into another --ckpt_dir")

    def _open_log(self):
        """The logger: the screen, and (rank 0) <logs_dir>/<name>.log, or <name>_test.log for
        a test (with one JSON record per test in <name>_test.jsonl), which goes on on the
        screen alone if the folder takes no files."""
        c = self.config
        log_file = os.path.join(c.logs_dir, self.name + ("" if c.is_train else "_test") + ".log")
        self.test_record = None if c.is_train else log_file[:-4] + ".jsonl"
        if not c.is_train:
            try:
                check_not_pretrained(c.logs_dir, "--logs_dir")
                ensure_dir(c.logs_dir, "--logs_dir")
            except RamError as e:
                print(f"[!] {e}; the test prints to the screen only")
                log_file = self.test_record = None
        try:
            return get_logger("ram", log_file if self.is_main else None, console=self.is_main)
        except OSError as e:
            raise RamError(f"cannot write the log {log_file}: {e.strerror}; pass another "
                           "--logs_dir") from None

    def _restore(self, state, restart_lr):
        checkpoint.load_weights(self.model, state, self.ckpt_file)
        self.epoch = int(state.get("epoch", 0))
        self.best_valid_acc = float(state.get("best_valid_acc", 0.0))
        self.counter = int(state.get("counter", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        if not self.config.is_train:
            return
        self.position = state.get("position")  # None at an epoch boundary
        self.last_good = self.ckpt_file
        if self.world == 1 and state.get("rng_state"):
            # Location noise continues where it stopped: resuming is bit-identical to never
            # having stopped. (Several ranks keep their own per-rank streams instead.)
            paddle.set_rng_state(state["rng_state"])
        if state.get("optim_state"):
            checkpoint.restore_optimizer(self.optimizer, self.model, state["optim_state"],
                                         keep_lr=not restart_lr)

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, best=False, position=None):
        """Write the training state atomically: the best model, epoch checkpoint `self.epoch`,
        or, with the `position` inside an interrupted epoch, `{name}_interrupted`. Weights
        that are not finite are never written. Returns the file."""
        bad = [k for k, p in self.model.state_dict().items() if not bool(paddle.isfinite(p).all())]
        if bad:
            self._diverged(f"weights of {', '.join(bad[:3])} are not finite")
        c = self.config
        stored = dict(vars(c), **{k: os.path.abspath(getattr(c, k)) for k in DIR_KEYS})
        state = {"epoch": self.epoch, "model_state": self.model.state_dict(),
                 "optim_state": checkpoint.optimizer_state(self.optimizer, self.model),
                 "best_valid_acc": self.best_valid_acc, "counter": self.counter,
                 "elapsed": self.elapsed, "config": stored, "rng_state": paddle.get_rng_state(),
                 "std": self.model.locator.std, "eval_std": c.eval_std}
        if position is not None:
            state["position"] = position
        file = checkpoint.path(c.ckpt_dir, self.name, best, None if position else self.epoch)
        checkpoint.save(state, file)
        if not best:
            self.last_good = file
        return file

    def _write_params_json(self):
        """<ckpt_dir>/<name>_params.json: the run's flags, readable without Paddle."""
        def write(tmp):
            with open(tmp, "w") as f:
                json.dump(vars(self.config), f, indent=2, sort_keys=True)
        checkpoint.atomic_write(os.path.join(self.config.ckpt_dir, self.name + "_params.json"),
                                write)

    def _diverged(self, what, batch=None):
        """Stop training with one line: what diverged, where, and what is left on disk."""
        where = f"epoch {self.epoch + 1}" + (f", batch {batch}" if batch else "")
        best = checkpoint.path(self.config.ckpt_dir, self.name, best=True)
        kept = [p for p in (self.last_good, best) if p and os.path.isfile(p)]
        kept = (f"the last good checkpoints are {', '.join(dict.fromkeys(kept))}" if kept
                else "no checkpoint had been saved before it")
        raise RamError(f"training diverged ({what}, {where}); nothing was saved from it and "
                       f"{kept}; lower --init_lr (now {self.config.init_lr:g}) or set "
                       "--clip_grad, e.g. 5")

    def _check_loss(self, loss_sum, seen, batch=None):
        """The mean loss so far, as a float, or a divergence error when it is not finite or
        has exploded (a sane hybrid loss is a few units; 1e6 is far past any of them)."""
        mean = float(loss_sum) / max(seen, 1)
        if not math.isfinite(mean) or abs(mean) > 1e6:
            self._diverged(f"the training loss is {mean:.3g}", batch)
        return mean

    # ---------------------------------------------------------------- evaluation
    def _sum_over_ranks(self, values):
        """The floats `values`, each summed over the ranks."""
        if self.world == 1:
            return list(values)
        total = paddle.to_tensor(values, dtype="float64")
        dist.all_reduce(total)
        return total.tolist()

    def evaluate(self, loader, M=1, std=None, seed=None):
        """The Evaluation of the model over a loader, M samples per image at policy std `std`
        (None: what testing uses, --eval_std for M = 1 and the training std for M > 1, whose
        average needs the policy's spread), on the draws of seed (None: --random_seed)."""
        c = self.config
        std = (c.eval_std if M == 1 else None) if std is None else std
        return evaluate(self.model, loader, c.num_glimpses, M,
                        c.random_seed if seed is None else seed, std, self._sum_over_ranks)

    def validate(self, loader):
        """An epoch's validation: at the training std, on the same draws every epoch."""
        return self.evaluate(loader, self.config.M, self.model.locator.std, VALID_NOISE_SEED)

    def test(self, test_loader):
        c = self.config
        test_loader.shard(self.rank, self.world, pad=False)
        tic = time.time()
        _, acc, correct, search = self.evaluate(test_loader, c.M)
        std = c.eval_std if c.M == 1 else self.model.locator.std
        self.logger.info(f"[*] Evaluated {test_loader.num_samples} images (M={c.M}, std {std:.3g}) "
                         f"in {time.time() - tic:.1f}s")
        self.logger.info(f"[*] Search: {SearchMeter.describe(search)}")
        self.logger.info(f"[*] Checkpoint {self.ckpt_file}: epoch {self.epoch}, {self.name}, "
                         f"std {self.model.locator.std:g}, core {c.core}, first fixation "
                         f"{c.first_fixation}, dataset {c.dataset} {c.canvas}x{c.canvas}"
                         + (f" with {c.clutter} pieces" if c.clutter else ""))
        self.logger.info(f"[*] Test Acc: {correct}/{test_loader.num_samples} "
                         f"({acc:.2f}% - {100 - acc:.2f}%)")
        if self.is_main and self.test_record:
            record = {"date": time.strftime("%Y-%m-%d"), "ckpt": self.ckpt_file,
                      "epoch": self.epoch, "seed": c.random_seed, "M": c.M, "std": std,
                      "default_std": self.default_std, "correct": correct,
                      "n": test_loader.num_samples, "error": round(100 - acc, 2), **search}
            with open(self.test_record, "a") as f:
                f.write(json.dumps(record) + "\n")
        return acc

    # ---------------------------------------------------------------- training
    def train_step(self, x, y, l_0=None, noise=None):
        """One optimisation step on a batch x [B, C, H, W], y [B] (this rank's part of the
        global batch); l_0 [B, 2] and noise [P + T, B, 2] fix the episode's draws (else
        drawn). Returns its Episode."""
        ep = self.net(x, y, l_0, noise)
        self.optimizer.clear_grad(set_to_zero=False)  # free, not zero-fill: backward assigns
        ep.loss.backward()
        self.optimizer.step()
        return ep

    def train_one_epoch(self, loader):
        """One pass over the training loader; returns mean loss and accuracy (%). A resumed
        interrupted epoch (self.position) starts at its next batch with its running sums."""
        self.model.train()
        pos, self.position = self.position or {}, None
        start, seen = int(pos.get("batches", 0)), int(pos.get("seen", 0))
        loss_sum = paddle.to_tensor(np.asarray(pos.get("loss_sum", 0.0), dtype="float32"))
        correct = paddle.to_tensor(np.asarray(pos.get("correct", 0.0), dtype="float32"))
        # What an interruption saves: where this epoch resumes from, until a step completes.
        self._progress = {"batches": start, "loss_sum": loss_sum, "correct": correct, "seen": seen}
        freq = self.config.plot_freq
        dump = self.is_main and freq and (self.epoch + 1) % freq == 0
        with tqdm(total=loader.local_samples, initial=seen, desc=f"epoch {self.epoch + 1}",
                  file=sys.stdout, leave=False, mininterval=1.0, dynamic_ncols=True,
                  disable=not self.is_main) as bar:
            for i, (x, y) in enumerate(loader.iterate(start), start):
                if self.stopped_by:
                    raise KeyboardInterrupt
                self._in_step = True
                ep = self.train_step(x, y)
                loss_sum, correct = loss_sum + ep.loss.detach() * x.shape[0], correct + ep.correct
                seen += x.shape[0]
                self._in_step = False
                self._progress = {"batches": i + 1, "loss_sum": loss_sum, "correct": correct,
                                  "seen": seen}
                if dump and i == 0:
                    self.dump_glimpses(x, ep.locs)
                bar.update(x.shape[0])
                if (i + 1) % REFRESH == 0:  # the only host sync in the loop
                    mean = self._check_loss(loss_sum, seen, i + 1)
                    bar.set_postfix(loss=f"{mean:.3f}", acc=f"{100 * correct.item() / seen:.2f}")
        # With several ranks, padding may repeat a few samples: average over what was seen.
        loss_sum, correct, seen = self._sum_over_ranks([float(loss_sum), float(correct), seen])
        self._check_loss(loss_sum, seen)
        return loss_sum / seen, 100.0 * correct / seen

    def train(self, train_loader, valid_loader):
        """Train until --epochs, or until --train_patience epochs bring no better validation
        accuracy. Returns the signal number that stopped it (SIGINT, SIGTERM), else None."""
        c = self.config
        if self.epoch >= c.epochs:
            raise RamError(f"the run has done {self.epoch} epochs, --epochs {c.epochs}: nothing "
                           f"to train; pass a larger total, e.g. --epochs {self.epoch + 100}")
        if self.counter > c.train_patience:
            raise RamError(f"the run stopped early at epoch {self.epoch}: {self.counter} epochs "
                           f"without a better validation accuracy, more than --train_patience "
                           f"{c.train_patience}; to go on, pass a larger --train_patience, e.g. "
                           f"{self.counter + 50}")
        lock = checkpoint.RunLock(c.ckpt_dir) if self.is_main else None
        try:
            if lock:
                for name in checkpoint.remove_stale_temporaries(c.ckpt_dir):
                    self.logger.info(f"[*] Removed {os.path.join(c.ckpt_dir, name)}, left by a "
                                     "run that was killed")
                self._write_params_json()
            train_loader.shard(self.rank, self.world, pad=True)
            valid_loader.shard(self.rank, self.world, pad=False)
            self._loop(train_loader, valid_loader)
        finally:
            if lock:
                lock.release()
        return self.stopped_by

    def _loop(self, train_loader, valid_loader):
        c = self.config
        # SIGTERM (a scheduler's kill, `kill PID`, or paddle.distributed.launch passing on
        # Ctrl-C) gets the same resumable checkpoint as Ctrl-C. Rank 0 stops at the end of
        # its step; the other ranks carry on meanwhile so that rank 0 never waits in a
        # collective for a dead peer, and end when it is gone.
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, self._request_stop),
                    signal.SIGTERM: signal.signal(
                        signal.SIGTERM, self._request_stop if self.is_main else signal.SIG_IGN)}
        writer = self._tensorboard()
        at = f", from batch {self.position['batches'] + 1}" if self.position else ""
        self.logger.info(f"[*] {self.name} on {self.device}: train on {train_loader.num_samples}, "
                         f"validate on {valid_loader.num_samples} images, "
                         f"epochs {self.epoch + 1}..{c.epochs}{at}")
        try:
            while self.epoch < c.epochs and self.counter <= c.train_patience:
                train_loader.set_epoch(self.epoch)
                lr, tic = self.optimizer.get_lr(), time.time()
                train_loss, train_acc = self.train_one_epoch(train_loader)
                val = self.validate(valid_loader)
                if not math.isfinite(val.loss):
                    self._diverged(f"the validation loss is {val.loss:.3g}")
                self.scheduler.step(val.acc)
                self._end_epoch(lr, time.time() - tic, train_loss, train_acc, val, writer)
        except KeyboardInterrupt:
            if self.is_main:
                self._save_interrupted()
            self.stopped_by = self.stopped_by or signal.SIGINT
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if writer:
                writer.close()
        if self.is_main:
            best = checkpoint.path(c.ckpt_dir, self.name, best=True)
            if os.path.isfile(best):
                self.logger.info(f"[*] Best model: {best} (validation accuracy "
                                 f"{self.best_valid_acc:.2f}%)")
            self.plot_curves()

    def _end_epoch(self, lr, secs, train_loss, train_acc, val, writer):
        """Count the epoch: log it, record its metrics, keep the best model and the epoch
        checkpoints."""
        c = self.config
        self.epoch += 1
        self._progress = None
        self.elapsed += secs
        is_best = val.acc > self.best_valid_acc
        self.best_valid_acc = max(val.acc, self.best_valid_acc)
        self.counter = 0 if is_best else self.counter + 1
        s = val.search
        self.logger.info(
            f"epoch {self.epoch}/{c.epochs} | lr {lr:.3e} std {self.model.locator.std:.3g} | "
            f"train loss {train_loss:.4f} acc {train_acc:.2f} | val loss {val.loss:.4f} "
            f"acc {val.acc:.2f} err {100 - val.acc:.2f} | {secs:.1f}s, total "
            f"{self.elapsed / 60:.1f} min" + (" [*]" if is_best else "")
            + " | " + SearchMeter.describe(s, short=True))
        record = {"epoch": self.epoch, "lr": lr, "std": self.model.locator.std,
                  "train_loss": train_loss, "train_acc": train_acc, "val_loss": val.loss,
                  "val_acc": val.acc, "secs": secs, "total_min": self.elapsed / 60, **s}
        if not self.is_main:
            return
        with open(os.path.join(c.logs_dir, self.name + "_metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        if writer:
            scalars = {"train/loss": train_loss, "train/acc": train_acc, "val/loss": val.loss,
                       "val/acc": val.acc, "lr": lr, "search/found": s["found"],
                       "search/err_found": s["err_found"], "search/err_lost": s["err_lost"]}
            scalars.update({f"search/dist_{t + 1}": d for t, d in enumerate(s["dist"])})
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, self.epoch)
        if is_best:
            self.save_checkpoint(best=True)
        stop = self.counter > c.train_patience
        if stop or self.epoch % c.save_freq == 0 or self.epoch == c.epochs:
            file = self.save_checkpoint()
            gone = checkpoint.prune(c.ckpt_dir, self.name, c.keep_ckpts)
            self.logger.info(f"[*] Saved {file} ({os.path.getsize(file) / 2 ** 20:.1f} MB)"
                             + (f"; removed {', '.join(map(os.path.basename, gone))} (--keep_ckpts "
                                f"{c.keep_ckpts})" if gone else ""))
        if stop:
            self.logger.info(f"[!] No better validation accuracy for {self.counter} epochs "
                             f"(--train_patience {c.train_patience}): training stops.")

    def _tensorboard(self):
        if not (self.config.use_tensorboard and self.is_main):
            return None
        from tensorboardX import SummaryWriter
        return SummaryWriter(os.path.join(self.config.logs_dir, self.name))

    def dump_glimpses(self, x, locs):
        """Save 9 images [9, H, W] and their fixations [T, 9, 2] for plot_glimpses.py; a
        failure to write them is a warning, never the end of training."""
        folder = os.path.join(self.config.plot_dir, self.name)
        try:
            os.makedirs(folder, exist_ok=True)
            for prefix, value in (("g", x[:9, 0]), ("l", locs[:, :9])):
                with open(os.path.join(folder, f"{prefix}_{self.epoch + 1}.p"), "wb") as f:
                    pickle.dump(value.numpy(), f)
        except OSError as e:
            self.logger.info(f"[!] Glimpses of epoch {self.epoch + 1} not saved in {folder}: "
                             f"{e.strerror}; training goes on")

    def _request_stop(self, signum, frame):
        """Ctrl-C or SIGTERM while training: stop at the end of the current step (raising at
        once could land half-way through Adam's update). A second Ctrl-C stops at once;
        repeated SIGTERMs (the launcher sends several) do not."""
        if self.stopped_by and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stopped_by = signum

    def _save_interrupted(self):
        """After Ctrl-C: the training state and the position inside the epoch, so that a
        resumed run goes on from the next batch exactly as if never stopped."""
        if self._in_step:  # a second Ctrl-C inside a step: the weights are half-updated
            self.logger.info(f"\n[!] Stopped inside a step of epoch {self.epoch + 1}; nothing "
                             f"saved from it (last checkpoint: {self.last_good or 'none'})")
            return
        p = self._progress
        position = {"batches": 0, "loss_sum": 0.0, "correct": 0.0, "seen": 0} if p is None else {
            "batches": p["batches"], "loss_sum": p["loss_sum"].numpy(),
            "correct": p["correct"].numpy(), "seen": p["seen"]}
        file = self.save_checkpoint(position=position)
        self.logger.info(f"\n[!] Interrupted in epoch {self.epoch + 1} after batch "
                         f"{position['batches']}: saved {file}; resume with: python main.py "
                         f"--resume=True --ckpt {os.path.abspath(file)}")

    def plot_curves(self):
        """Learning curves of this model's metrics (all runs, resumed ones included) as a PNG."""
        if self._draw_curves is None:
            return
        metrics = os.path.join(self.config.logs_dir, self.name + "_metrics.jsonl")
        out = os.path.join(self.config.plot_dir, self.name + "_curves.png")
        try:
            self.logger.info(f"[*] Learning curves: {self._draw_curves(metrics, out)}")
        except (RamError, OSError) as e:  # nothing to draw, or nowhere: nothing lost
            self.logger.info(f"[!] No learning curves: {e}")
