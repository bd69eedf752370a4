"""End-to-end training recipes (corpus generation, stages, export, evaluation) built from training's parts."""
