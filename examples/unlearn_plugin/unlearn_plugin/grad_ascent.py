"""Gradient ascent on the forget set, then fine-tuning on the retain set: a method from outside
tune_unlearn (`--method unlearn_plugin.grad_ascent:GradientAscent`, or `--method grad_ascent`
once the package is installed). Its search space is grad_ascent.yaml beside this file."""

from tune_unlearn.methods.base import Context, Float, Int, Method, UnlearnData


class GradientAscent(Method):
    name = "grad_ascent"
    epochs_hparam = "ft_epochs"  # the per-epoch states ASHA may stop early
    hparams = (
        Int("ascent_epochs", 1, 1, 5, min=1, help="passes of gradient ascent over the forget set"),
        Float("ascent_lr", 1e-3, 1e-5, 1e-2, log=True, min=0.0, help="learning rate of the ascent"),
        Int("ft_epochs", 2, 1, 5, min=0, help="fine-tuning epochs on the retain set"),
        Float("ft_lr", 0.01, 1e-3, 0.1, log=True, min=0.0, help="fine-tuning learning rate (cosine to 0)"),
    )

    def unlearn(self, model, data: UnlearnData, hp: dict, ctx: Context) -> dict:
        import torch.nn.functional as F  # inside: the command line checks methods before torch loads

        from tune_unlearn.training import finetune, run_epochs, sgd

        run_epochs(model, ctx.runtime, epochs=hp["ascent_epochs"], optimizer=sgd(model.parameters(), hp["ascent_lr"]),
                   batches=lambda: data.forget.batches(ctx.batch_size, shuffle=True), what="ascent loss",
                   loss_fn=lambda batch: -F.cross_entropy(model(batch[0]), batch[1]),
                   on_epoch=lambda epoch, logs: ctx.epoch_end("ascent", epoch, logs, False))
        finetune(model, data.retain, ctx.runtime, epochs=hp["ft_epochs"], lr=hp["ft_lr"], batch_size=ctx.batch_size,
                 on_epoch=lambda epoch, logs: ctx.epoch_end("finetune", epoch, logs, True))
        return {}
