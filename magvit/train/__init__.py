"""The shared trainer of both MAGVIT stages (single process or ``torchrun`` DDP).

* :class:`~magvit.train.trainer.Trainer` -- the loop, checkpoints and resumption;
* :class:`~magvit.train.stage.Stage` -- what a stage provides (phases and their losses);
* :class:`~magvit.train.tokenizer_stage.TokenizerStage` and
  :class:`~magvit.train.transformer_stage.TransformerStage` -- the two stages of the paper.
"""
