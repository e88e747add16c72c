"""``rts data``: generate the synthetic mini-Taskonomy, check a data folder, look at a sample.

* ``rts data synth --out DIR --n N --size S --seed K`` writes the synthetic data set in the
  Taskonomy layout (``tasks.synthetic.write_dataset``);
* ``rts data check DIR [--tasks KEYS] [--convention C]`` validates a folder (missing domains or
  files, unreadable files, wrong encodings, inconsistent sizes, value ranges), prints a summary
  and exits 2 with one line when it is broken;
* ``rts data show DIR --index I --out sample.png [--size S]`` draws one image with its labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_SHOW_OUT = "sample.png"
_MAX_LISTED_PROBLEMS = 20


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Declare ``rts data`` and its actions."""
    parser = subparsers.add_parser(
        "data",
        help="generate, check and look at data sets",
        description="Generate the synthetic mini-Taskonomy, check a Taskonomy folder, or draw "
        "one sample with its labels.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = actions.add_parser(
        "synth",
        help="write the synthetic mini-Taskonomy in the Taskonomy layout",
        description="Render N synthetic views (deterministic in --seed) and write them as "
        "Taskonomy PNG files: rgb/<building>/point_<p>_view_<v>_domain_rgb.png, ...",
    )
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--n", type=int, default=256, help="number of views (default 256)")
    synth.add_argument("--size", type=int, default=64, help="square resolution (default 64)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the scenes (default 0)")

    check = actions.add_parser(
        "check",
        help="validate a Taskonomy folder",
        description="Check a Taskonomy folder for the given tasks: every domain folder and file "
        "present and readable in its encoding, sizes consistent, value ranges. Prints a summary; "
        "exit code 2 when something is wrong.",
    )
    check.add_argument("dir", type=Path, help="Taskonomy folder (with rgb/)")
    _add_tasks_and_convention(check, "tasks to check, e.g. 'sdn' or 's,d,n' (default: all 11)")

    show = actions.add_parser(
        "show",
        help="draw one image with its labels",
        description="Decode one view with the labels of the tasks and save them as a grid of "
        "panels (PNG, PDF or SVG by the --out suffix). Invalid pixels are grey.",
    )
    show.add_argument("dir", type=Path, help="Taskonomy folder (with rgb/)")
    show.add_argument("--index", type=int, default=0, help="view number in name order (default 0)")
    show.add_argument(
        "--out", type=Path, default=Path(DEFAULT_SHOW_OUT), help=f"image file ({DEFAULT_SHOW_OUT})"
    )
    show.add_argument("--size", type=int, default=None, help="resize to SxS (default: native)")
    _add_tasks_and_convention(show, "tasks to draw (default: every task the folder has)")
    parser.set_defaults(func=run)
    return parser


def _add_tasks_and_convention(parser: argparse.ArgumentParser, tasks_help: str) -> None:
    parser.add_argument("--tasks", default=None, help=tasks_help)
    parser.add_argument(
        "--convention",
        default="mtrobust",
        help="label decoding: mtrobust (default) or taskgrouping",
    )


def _interactive() -> bool:
    """Show progress bars only on a terminal, so logs and error output stay clean."""
    import sys

    return sys.stderr.isatty()


def run(args: argparse.Namespace) -> int:
    """Dispatch ``rts data ACTION``."""
    if args.data_command == "synth":
        return _synth(args.out, args.n, args.size, args.seed)
    if args.data_command == "check":
        return _check(args.dir, args.tasks, args.convention)
    return _show(args.dir, args.index, args.out, args.size, args.tasks, args.convention)


def _synth(out: Path, n: int, size: int, seed: int) -> int:
    from rts.tasks.synthetic import write_dataset  # validates n, size, seed before writing anything

    path = write_dataset(out, n, size, seed, progress=_interactive())
    print(f"wrote {n} synthetic views at {size}x{size} px (seed {seed}) to {path}")
    return 0


def _check(root: Path, tasks: str | None, convention: str) -> int:
    from rts.tasks.registry import parse_tasks

    keys = parse_tasks(tasks) if tasks is not None else None  # before the heavy imports

    from rts.tasks.encoding import check_convention
    from rts.tasks.taskonomy import check_folder, format_report

    check_convention(convention)
    report = check_folder(root, keys, convention, progress=_interactive())
    print(format_report(report))
    for problem in report.problems[:_MAX_LISTED_PROBLEMS]:
        print(f"  {problem}")
    if len(report.problems) > _MAX_LISTED_PROBLEMS:
        print(f"  ... and {len(report.problems) - _MAX_LISTED_PROBLEMS} more")
    if report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise ValueError(f"{root} is broken: {report.problems[0]}{more}")
    return 0


def _available_tasks(root: Path, convention: str) -> str:
    """Tasks whose domain folders (and validity-mask source) exist in ``root``."""
    from rts.tasks.encoding import MASK_DOMAIN, domain_aliases, required_domains
    from rts.tasks.registry import TASK_KEYS

    has_mask = (root / MASK_DOMAIN).is_dir()

    def present(domain: str) -> bool:
        return any((root / name).is_dir() for name in domain_aliases(domain))

    keys = "".join(
        k
        for k in TASK_KEYS
        if all(present(d) for d in required_domains(k, convention, has_mask_folder=has_mask))
    )
    if not keys:
        raise ValueError(f"no task labels found in {root}; it only has: rgb")
    return keys


def _show(
    root: Path, index: int, out: Path, size: int | None, tasks: str | None, convention: str
) -> int:
    from rts.tasks.data import MAX_SIZE, MIN_SIZE
    from rts.tasks.encoding import check_convention, expand
    from rts.tasks.registry import canonical_tasks
    from rts.tasks.taskonomy import load_record, scan_folder

    check_convention(convention)
    if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}] pixels, got size={size}")
    suffix = out.suffix.lower().lstrip(".") or "png"
    if suffix not in ("png", "pdf", "svg"):
        raise ValueError(f"--out must end in .png, .pdf or .svg, got {out}")
    if not root.exists():
        raise FileNotFoundError(f"data folder not found: {root}")
    keys = canonical_tasks(tasks) if tasks is not None else _available_tasks(root, convention)
    records = scan_folder(root, keys, convention)
    if not 0 <= index < len(records):
        raise ValueError(
            f"index {index} out of range; {root} has {len(records)} views (0..{len(records) - 1})"
        )
    record = records[index]
    image, labels = load_record(record, keys, size=size, convention=convention)
    x, y = expand(image[None], {k: v[None] for k, v in labels.items()}, keys, convention)
    fig = draw_sample(x[0], {k: v[0] for k, v in y.items()}, convention, title=record.name)
    _save_figure(fig, out, suffix)
    print(f"wrote {out} ({record.name}, tasks {keys}, {x.shape[-1]}x{x.shape[-2]} px)")
    return 0


def _save_figure(fig, out: Path, fmt: str) -> None:
    import matplotlib.pyplot as plt

    from rts.tasks.io import atomic_path

    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def draw_sample(x, y: dict, convention: str, title: str = ""):
    """A matplotlib figure: the image and one panel per label, titled, invalid pixels grey.

    Args:
        x: image ``[3, H, W]`` in ``[0, 1]``.
        y: labels ``{key: [C, H, W] | [H, W]}`` as the loader returns them.
        convention: how the labels were decoded (for the autoencoder's range).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from rts.tasks.registry import SEG_CLASSES, SEG_IGNORE, get_task

    panels = 1 + len(y)
    cols = min(4, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    grey = np.array([0.75, 0.75, 0.75])

    def rgb_panel(ax, img: np.ndarray, label: str) -> None:
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_title(label, fontsize=9)

    rgb_panel(axes.flat[0], x.permute(1, 2, 0).numpy(), "input image (rgb)")
    for ax, (key, label) in zip(list(axes.flat)[1:], y.items(), strict=False):
        spec = get_task(key)
        name = f"{key}: {spec.name}"
        arr = label.float().numpy()
        if spec.is_segmentation:
            ids = label.numpy()
            cmap = plt.get_cmap("tab20", 20)
            img = cmap(np.clip(ids, 0, SEG_CLASSES - 1) % 20)[..., :3]
            img[ids == SEG_IGNORE] = grey
            classes = sorted(int(c) for c in np.unique(ids) if c != SEG_IGNORE)
            rgb_panel(ax, img, f"{name}\n{len(classes)} classes, grey = unlabelled")
            continue
        invalid = np.isnan(arr).any(axis=0)
        if key == "A":
            img = (
                (arr.transpose(1, 2, 0) + 1) / 2
                if convention == "mtrobust"
                else arr.transpose(1, 2, 0)
            )
            shown_as = "(A + 1) / 2" if convention == "mtrobust" else "A"
            rgb_panel(ax, img, f"{name}\nlabel = the image, shown as {shown_as}")
        elif key == "n":
            img = (np.nan_to_num(arr.transpose(1, 2, 0)) + 1) / 2
            img[invalid] = grey
            rgb_panel(ax, img, f"{name}\nRGB = (n + 1) / 2, grey = invalid")
        elif key == "p":
            lim = max(float(np.nanmax(np.abs(arr))) if (~invalid).any() else 1.0, 1e-6)
            img = np.zeros((*arr.shape[1:], 3))
            img[..., 0] = (np.nan_to_num(arr[0]) / lim + 1) / 2
            img[..., 1] = (np.nan_to_num(arr[1]) / lim + 1) / 2
            img[invalid] = grey
            rgb_panel(ax, img, f"{name}\nR = κ1, G = κ2 (±{lim:.2g}), grey = invalid")
        else:
            values = np.ma.masked_invalid(arr[0])
            cmap = plt.get_cmap("viridis" if key in "dD" else "magma").with_extremes(bad=grey)
            shown = ax.imshow(values, cmap=cmap, interpolation="nearest")
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
            suffix = ", grey = invalid" if invalid.any() else ""
            ax.set_title(f"{name}\n{'':s}range {_range(arr)}{suffix}", fontsize=9)
    fig.suptitle(f"{title}  ({convention} convention)", fontsize=11)
    fig.tight_layout()
    return fig


def _range(arr) -> str:
    import numpy as np

    if np.isnan(arr).all():
        return "all invalid"
    return f"{float(np.nanmin(arr)):.3g} .. {float(np.nanmax(arr)):.3g}"
