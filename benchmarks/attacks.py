"""Attack speed benchmark: overhead of the library against bare loops, and multi-task scaling.

Prints a Markdown table. Each comparison is timed side by side in this one run (the two sides
alternate, median of ``--reps``), and each case's peak memory is measured in a fresh child process
(peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on a GPU).

Comparisons (goal in brackets):

* ``pgd`` vs a bare hand-written PGD loop on the same multi-task model, 5 attacked tasks (≤ 1.05×);
* ``pgd`` on 5 attacked tasks vs on 1 task of the same 5-task model (≤ 1.15×: one backward per
  step, never one per task); for reference also a naive loop with one backward per task;
* single-task ``pgd`` vs ``torchattacks.PGD`` on a classifier (≤ 1.0×).

The 5-vs-1 ratio cannot go below the model's own cost of four more decoders (only the attacked
heads run); the bare-loop 5-vs-1 row measures that floor.

Usage: ``python -m benchmarks.attacks [--size 64] [--batch 8] [--steps 5] [--reps 5]
[--threads 1] [--device cpu|cuda] [--no-memory]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from rts.attacks import pgd
from rts.tasks.losses import task_losses

TASKS5 = "sdDnE"
EPS, ALPHA = 8 / 255, 2 / 255


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_multitask(size: int, batch: int, width: int, device: torch.device):
    """The 5-task ResNet18 model, a batch of images and random labels on ``device``."""
    from rts.models import build_model
    from rts.tasks.registry import SEG_CLASSES

    model = build_model("resnet18", TASKS5, decoder_width=width, seed=0).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen)
    y = {}
    for k in TASKS5:
        if k == "s":
            y[k] = torch.randint(0, SEG_CLASSES, (batch, size, size), generator=gen)
        else:
            c = 3 if k == "n" else 1
            y[k] = torch.randn(batch, c, size, size, generator=gen)
    return model, x.to(device), {k: v.to(device) for k, v in y.items()}


def make_classifier(size: int, batch: int, device: torch.device):
    """A torchvision ResNet18 classifier (10 classes), images and labels."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.resnet18(num_classes=10).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    return net, x, y


class Wrapped(torch.nn.Module):
    """``{"y": logits}`` around a classifier."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return {"y": self.net(x)}


def bare_pgd(model, x, y, tasks: str, steps: int) -> torch.Tensor:
    """The minimal PGD loop a user would write: summed losses, sign step, clip."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        out = model(x_adv, tasks=tasks)
        losses = task_losses(out, y, tasks)
        loss = sum(losses.values()).sum() / len(tasks)
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = (x + (x_adv.detach() + ALPHA * g.sign() - x).clamp(-EPS, EPS)).clamp(0, 1)
    return x_adv


def per_task_backward_pgd(model, x, y, tasks: str, steps: int) -> torch.Tensor:
    """A naive multi-task loop: one backward per task per step (what we avoid)."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        out = model(x_adv, tasks=tasks)
        losses = task_losses(out, y, tasks)
        g = torch.zeros_like(x)
        for i, k in enumerate(tasks):
            g += torch.autograd.grad(losses[k].sum(), x_adv, retain_graph=i < len(tasks) - 1)[0]
        x_adv = (x + (x_adv.detach() + ALPHA * g.sign() - x).clamp(-EPS, EPS)).clamp(0, 1)
    return x_adv


def build_cases(args, device: torch.device) -> dict[str, Callable[[], object]]:
    """Name → zero-argument callable running one attack (set-up done once)."""
    steps = args.steps
    model, x, y = make_multitask(args.size, args.batch, args.width, device)
    net, xc, yc = make_classifier(args.cls_size, args.cls_batch, device)
    wrapped = Wrapped(net)
    import torchattacks

    ta = torchattacks.PGD(net, eps=EPS, alpha=ALPHA, steps=steps, random_start=False)
    ce = {"y": lambda p, t: F.cross_entropy(p, t, reduction="none")}
    kw = {"eps": EPS, "steps": steps, "step_size": ALPHA, "random_start": False}
    return {
        "pgd 5 tasks": lambda: pgd(model, x, y, TASKS5, **kw),
        "bare loop 5 tasks": lambda: bare_pgd(model, x, y, TASKS5, steps),
        "pgd 1 task (d)": lambda: pgd(model, x, y, "d", **kw),
        "bare loop 1 task (d)": lambda: bare_pgd(model, x, y, "d", steps),
        "per-task backward 5 tasks": lambda: per_task_backward_pgd(model, x, y, TASKS5, steps),
        "pgd classifier": lambda: pgd(wrapped, xc, {"y": yc}, "y", losses=ce, **kw),
        "torchattacks.PGD classifier": lambda: ta(xc, yc),
    }


COMPARISONS = (
    ("pgd vs bare loop (5 tasks)", "pgd 5 tasks", "bare loop 5 tasks", 1.05),
    ("5 attacked tasks vs 1", "pgd 5 tasks", "pgd 1 task (d)", 1.15),
    # the model's own cost of 4 more decoders (forward + backward): the floor of the row above
    ("bare loop, 5 tasks vs 1", "bare loop 5 tasks", "bare loop 1 task (d)", None),
    (
        "per-task backward vs one backward (5 tasks)",
        "per-task backward 5 tasks",
        "pgd 5 tasks",
        None,
    ),
    ("pgd vs torchattacks.PGD (classifier)", "pgd classifier", "torchattacks.PGD classifier", 1.0),
)


def time_pair(a: Callable, b: Callable, reps: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, interleaved A B B A ... so both see the same load."""
    a(), b()  # warm-up
    ta: list[float] = []
    tb: list[float] = []
    for i in range(reps):
        order = ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta))
        for fn, out in order:
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def _status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) so the next peak is this case's alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _memory_child(args, name: str, queue) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = build_cases(args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = _status_mib("VmRSS")
    if _reset_peak_rss() and before is not None:
        cases[name]()
        _sync(device)
        peak = _status_mib("VmHWM")
    else:  # no /proc: the process-lifetime peak, set-up included
        cases[name]()
        _sync(device)
        before, peak = None, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    queue.put((before, peak, cuda))


def peak_memory(args, name: str) -> tuple[float | None, float, float | None]:
    """(RSS before the attack, peak RSS during it, CUDA max allocated) in MiB, fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(args, name, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="multi-task image size (64)")
    parser.add_argument("--batch", type=int, default=8, help="multi-task batch (8)")
    parser.add_argument("--width", type=int, default=32, help="decoder width (32)")
    parser.add_argument("--cls-size", type=int, default=32, help="classifier image size (32)")
    parser.add_argument("--cls-batch", type=int, default=32, help="classifier batch (32)")
    parser.add_argument("--steps", type=int, default=5, help="attack steps (5)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (5)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory children")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = build_cases(args, device)

    print(
        f"device {device}, torch {torch.__version__}, {args.threads} threads; multi-task: "
        f"resnet18 + {len(TASKS5)} decoders (width {args.width}), {args.batch}×3×{args.size}²; "
        f"classifier: resnet18, {args.cls_batch}×3×{args.cls_size}²; {args.steps} steps; "
        f"median of {args.reps}\n"
    )
    print("| comparison | A (s) | B (s) | A/B | goal |")
    print("| --- | --- | --- | --- | --- |")
    for label, a, b, goal in COMPARISONS:
        t_a, t_b = time_pair(cases[a], cases[b], args.reps, device)
        goal_text = f"≤ {goal:.2f}×" if goal else "(reference)"
        print(
            f"| {label}: A = {a}, B = {b} | {t_a:.3f} | {t_b:.3f} | {t_a / t_b:.3f} | {goal_text} |"
        )
    if args.no_memory:
        return
    print(
        "\n| case | RSS before (MiB) | peak RSS during (MiB) | peak - before (MiB) "
        "| CUDA max allocated (MiB) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in cases:
        before, peak, cuda = peak_memory(args, name)
        cuda_text = f"{cuda:.0f}" if cuda is not None else "-"
        before_text = f"{before:.0f}" if before is not None else "-"
        delta = f"{peak - before:.0f}" if before is not None else "-"
        print(f"| {name} | {before_text} | {peak:.0f} | {delta} | {cuda_text} |")


if __name__ == "__main__":
    main()
