"""Triptych in Jupyter and Colab: `%load_ext triptych` registers the notebook magics.

    %load_ext triptych
    %%check                      # first line of a cell: grade the functions the cell defines
    %check split_heads           # grade a function defined in an earlier cell
    %exercise show split_heads   # what `triptych exercise show` prints
    %exercise new course-b       # the skeleton as the next cell
    %lesson subspace             # a lesson, its plot inline

The magics live in triptych/notebook.py; nothing heavy (IPython, torch, the checker) is imported
until the extension loads.
"""
from __future__ import annotations


def load_ipython_extension(ipython) -> None:
    from triptych.notebook import TriptychMagics

    ipython.register_magics(TriptychMagics)
