"""`python cli.py parity`: every core op in NumPy and JAX against torch, one row each.

Exit code 1 if any row fails, so the command can gate a script or a CI job."""
from __future__ import annotations

from triptych.common.argtypes import SEED
from triptych.common.console import add_report_flags

ORDER = 20


def register(sub) -> None:
    p = sub.add_parser("parity", help="NumPy and JAX vs torch for every core op (shape, L2 norms, max error)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    p.add_argument("--seed", type=SEED, default=0)
    add_report_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.progress import Progress
    from rich.table import Table

    from triptych.commands._common import console, print_json, save_reports
    from triptych.crosscheck.cases import B, D_HEAD, H, T, T_K, all_cases, run_case

    CASES = all_cases()

    rows = []
    with Progress(console=console, transient=True, disable=args.json) as progress:
        task = progress.add_task(f"parity {args.dtype}", total=len(CASES))
        for case in CASES:
            row = run_case(case, args.dtype, seed=args.seed)
            row.pop("outputs")
            rows.append(row)
            progress.advance(task)

    if args.json:
        print_json(rows)
    else:
        table = Table(title=f"Parity vs torch, {args.dtype} (B={B}, H={H}, T={T}, T_k={T_K}, d_head={D_HEAD})")
        for col, justify in (("op", "left"), ("output shape(s)", "left"), ("L2 numpy", "right"), ("L2 jax", "right"),
                             ("L2 torch", "right"), ("max |err|", "right"), ("tol", "right"), ("", "center")):
            table.add_column(col, justify=justify, no_wrap=col == "op")
        for r in rows:
            table.add_row(r["op"], r["shape"], *(f"{r['l2'][b]:.6g}" for b in ("numpy", "jax", "torch")),
                          f"{r['max_abs_err']:.2e}", f"{r['tol']:.1e}",
                          "[green]pass[/]" if r["ok"] else "[bold red]FAIL[/]")
        console.print(table)
        n_bad = sum(not r["ok"] for r in rows)
        console.print(f"{len(rows) - n_bad}/{len(rows)} rows within |a - ref| <= atol + rtol*|ref| "
                      f"(atol={rows[0]['atol']:g}, rtol={rows[0]['rtol']:g}); ref = torch")
    save_reports(args)
    return 0 if all(r["ok"] for r in rows) else 1
