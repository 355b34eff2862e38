"""Fine-tuning a pretrained encoder for text classification: the "applying transformers" half of the
course (exercises.md section H), with torch's and Hugging Face's own implementations.

    config.py   TrainConfig, ModelSpec, METHODS, OPTIMIZERS, DEFAULT_LR (plain data, no torch import)
    data.py     tasks (fine-foods, brown-topics, austen-pairs, ag_news/sst2/boolq) and dynamic padding
    models.py   full / head / prefix / LoRA classifiers and their trainable-parameter formulas
    train.py    the training loop (accelerate): build, step, evaluate, keep the best, resume
    checkpoints.py  best/ and last/ folders written atomically, run.json, load_checkpoint, predict
    distributed.py  several processes: each takes its slice of the same global batch
    memory.py   forward/backward peak memory (torch.profiler on CPU, CUDA counters on GPU)
    numpy_step.py  the NumPy engine's step on a torch model's weights, its memory (tracemalloc)
    rss.py      peak resident memory of one step in a fresh process
    studies.py  overfit, batch-size, grid, optimizers, methods, pretrained-vs-scratch, topic-news
    study_methods.py  the methods study (torch beside the NumPy engine); study_output.py: tables, results
    plots.py    PNG curves and bar charts

CLI: `python cli.py finetune {datasets,train,predict,study} ...` (triptych/commands/finetune.py).
"""
