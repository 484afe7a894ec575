"""``minitrans.train``: the training loop and command-line plumbing every experiment shares.

    setup = start_run(parser, argv, "reverse")            # args, run directory, checkpoint (--resume)
    trainer = Trainer(model, opt, loss_fn, batch_fn, evaluate, setup.dir, Budget(3000, None, 0.99),
                      data_rng=rng, scheduler=sched)
    if setup.checkpoint: trainer.restore(setup.checkpoint)
    result = trainer.fit(); print(result.message)          # the last line says why the run ended
"""
from .loop import Budget, Result, RunError, Trainer
from .runs import RunSetup, add_arguments, check_device, cli, exit_code, explicit_options, start_run

__all__ = ["Budget", "Result", "RunError", "RunSetup", "Trainer", "add_arguments", "check_device", "cli", "exit_code",
           "explicit_options", "start_run"]
