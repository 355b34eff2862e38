"""`triptych exercise list|show NAME|new GROUP`: the catalogue `check` grades against.

`list` groups the exercises by course section, `show` prints one exercise's signature, shape
contract, cases and the mistakes it can name, `new` writes a skeleton file to fill in: a .py file, or with --out NAME.ipynb a notebook with
one cell per exercise."""
from __future__ import annotations

ORDER = 24


def register(sub) -> None:
    p = sub.add_parser("exercise", help="the exercises `check` grades: list, show NAME, new GROUP --out FILE")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    ls = s.add_parser("list", help="the catalogue, grouped by course section")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    sh = s.add_parser("show", help="signature, shape contract, cases and named mistakes of one exercise")
    sh.add_argument("name", metavar="NAME")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=run_show)
    nw = s.add_parser("new", help="write a skeleton (.py, or .ipynb: one cell per exercise) with a TODO stub per exercise of a group")
    nw.add_argument("group", metavar="GROUP", help="course-a, course-b, ... (`exercise list` names them)")
    nw.add_argument("--framework", choices=["numpy", "torch", "jax"], default="numpy")
    nw.add_argument("--out", required=True, metavar="FILE", help="where to write it: NAME.py, or NAME.ipynb for a notebook (refuses to overwrite)")
    nw.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    nw.set_defaults(func=run_new)
    for action in (ls, sh, nw):
        action.add_argument("--pack", action="append", metavar="FILE",
                            help="also a teacher's exercise pack (.py file or module; repeatable)")


def _use_packs(args) -> None:
    from triptych.crosscheck.exercises import use_packs

    use_packs(getattr(args, "pack", None))


def run_list(args) -> int:
    _use_packs(args)
    from rich.table import Table

    from triptych.commands._common import console, print_json
    from triptych.crosscheck.exercises import groups

    found = groups()
    if args.json:
        print_json([{"group": g, "title": title, "name": ex.name, "signature": ex.signature,
                     "mistakes": len(ex.variants)} for g, (title, exs) in found.items() for ex in exs])
        return 0
    from triptych.common.invocation import program

    table = Table(title=f"{program()} exercise show NAME  |  exercise new GROUP --out FILE", title_justify="left")
    for col in ("group", "exercise", "signature", "cases", "named mistakes"):
        table.add_column(col, overflow="fold")
    for g, (title, exs) in found.items():
        for n, ex in enumerate(exs):
            table.add_row(f"[bold]{g}[/]" if n == 0 else "", ex.name, ex.signature, str(len(ex.cases)),
                          str(len(ex.variants)))
        table.add_section()
    console.print(table)
    n_ex = sum(len(exs) for _, exs in found.values())
    n_var = sum(len(ex.variants) for _, exs in found.values() for ex in exs)
    console.print(f"{n_ex} exercises in {len(found)} groups; {n_var} named mistakes")
    return 0


def run_show(args) -> int:
    _use_packs(args)
    from rich.markup import escape

    from triptych.commands._common import console, print_json
    from triptych.crosscheck.exercises import get
    from triptych.crosscheck.sandbox.binding import describe
    from triptych.crosscheck.spec import locate

    ex = get(args.name)
    info = {"name": ex.name, "group": ex.group, "signature": ex.signature, "contract": ex.contract,
            "checks": ex.checks, "notes": ex.notes, "backends": list(ex.backends), "outputs": list(ex.outputs),
            "accepts": describe(ex.target),
            "cases": [{"name": c.name, "dtype": c.dtype, "course_tol": c.course_tol} for c in ex.cases],
            "mistakes": [{"name": v.name, "says": v.says, "why": v.why, "fix_at": locate(v.fix_at), "kind": v.kind}
                         for v in ex.variants]}
    if args.json:
        print_json(info)
        return 0
    console.print(f"[bold]{ex.name}[/]  ({ex.group})")
    console.print(f"  def {escape(ex.signature)}")
    console.print(f"  shapes: {escape(ex.contract)}")
    console.print(f"  checked: {escape(ex.checks)}; references from {', '.join(ex.backends)}")
    if ex.notes:
        console.print(f"  note: {escape(ex.notes)}")
    if info["accepts"]:
        console.print("  your parameters may be named your way:")
        for line in info["accepts"]:
            console.print(f"    - {escape(line)}")
    console.print("  cases:")
    for c in ex.cases:
        tol = f", course tolerance {c.course_tol:g}" if c.course_tol is not None else ""
        console.print(f"    - {escape(c.name)} ({c.dtype}{tol})")
    for kind, heading in (("mistake", "mistakes it names"), ("convention", "other forms it accepts, named"),
                          ("precision", "lower precision it accepts, named")):
        of_kind = [v for v in ex.variants if v.kind == kind]
        if of_kind:
            console.print(f"  {heading}:")
        for v in of_kind:
            console.print(f"    - [yellow]{escape(v.name)}[/]: {escape(v.says)}")
    return 0


def run_new(args) -> int:
    _use_packs(args)
    import os

    from triptych.commands._common import CLIError, console
    from triptych.common.invocation import command
    from triptych.common.io import atomic_path
    from triptych.crosscheck.exercises import get_group, groups
    from triptych.crosscheck.skeleton import render, render_notebook

    exs = get_group(args.group)
    # A folder (or a name ending in /) is never replaced, --force or not: the skeleton is one file.
    if os.path.isdir(args.out) or args.out.endswith(("/", os.sep)):
        raise CLIError(f"--out: expected a file name such as my_attention.py or my.ipynb, got the folder {args.out}")
    if os.path.exists(args.out) and not args.force:
        raise CLIError(f"--out: {args.out} exists; choose another name or pass --force")
    notebook = args.out.endswith(".ipynb")
    text = (render_notebook if notebook else render)(args.group, groups()[args.group][0], exs, args.framework)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if notebook:
        console.print(f"wrote {args.out}: {len(exs)} cells ({args.framework}), each graded when run "
                      f"(%%check NAME, after %load_ext triptych). All at once: {command('check', args.out)}",
                      soft_wrap=True, markup=False)
    else:
        console.print(f"wrote {args.out}: {len(exs)} stubs ({args.framework}). Fill them in, then: "
                      f"{command('check', args.out)}")
    return 0
