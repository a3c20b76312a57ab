"""Optimizer and learning-rate schedule from a `Recipe` (keras.optimizers, EMA included)."""

import keras

NO_DECAY = ["gamma", "beta", "bias"]  # BN scale/offset and biases


@keras.saving.register_keras_serializable(package="keras_ghost")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """timm's step schedule: linear warmup from `warmup_lr` to `lr` over `warmup_steps`,
    then `lr * decay_rate ** floor(step / decay_steps)` (step counted from the start)."""

    def __init__(self, lr, decay_steps, decay_rate, warmup_steps=0, warmup_lr=0.0):
        self.lr = lr
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.warmup_steps = warmup_steps
        self.warmup_lr = warmup_lr

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        decayed = self.lr * keras.ops.power(
            self.decay_rate, keras.ops.floor(step / self.decay_steps))
        if not self.warmup_steps:
            return decayed
        warm = self.warmup_lr + (self.lr - self.warmup_lr) * step / self.warmup_steps
        return keras.ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"lr": self.lr, "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "warmup_steps": self.warmup_steps, "warmup_lr": self.warmup_lr}


def build_schedule(recipe, steps_per_epoch, global_batch_size):
    """The recipe's schedule in optimizer steps, peak lr scaled to `global_batch_size`."""
    lr = recipe.scaled_lr(global_batch_size)
    total = max(int(recipe.epochs * steps_per_epoch), 1)
    # At most a fifth of a short run goes to warmup.
    warmup = min(int(recipe.warmup_epochs * steps_per_epoch), total // 5)
    if recipe.schedule == "step":
        return WarmupStepDecay(lr, max(recipe.decay_epochs * steps_per_epoch, 1.0),
                               recipe.decay_rate, warmup, recipe.warmup_lr)
    return keras.optimizers.schedules.CosineDecay(
        recipe.warmup_lr if warmup else lr, decay_steps=max(total - warmup, 1),
        alpha=recipe.min_lr / lr if lr else 0.0,
        warmup_target=lr if warmup else None, warmup_steps=warmup)


def build_optimizer(recipe, steps_per_epoch, global_batch_size):
    """SGD, RMSProp-TF or AdamW with the recipe's schedule, decoupled weight decay (not on
    BN/bias when the recipe says so), EMA of the weights and gradient accumulation.

    RMSProp-TF: Keras' RMSprop adds epsilon inside the square root, as TensorFlow's did;
    unlike timm's RMSpropTF its mean square starts at 0, not 1.
    """
    schedule = build_schedule(recipe, steps_per_epoch, global_batch_size)
    common = dict(
        weight_decay=recipe.weight_decay or None,
        use_ema=recipe.ema_decay is not None,
        ema_momentum=recipe.ema_decay if recipe.ema_decay is not None else 0.99,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps)
    if recipe.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=recipe.momentum,
                                         nesterov=recipe.nesterov, **common)
    elif recipe.optimizer == "rmsprop_tf":
        optimizer = keras.optimizers.RMSprop(schedule, rho=recipe.rmsprop_rho,
                                             momentum=recipe.momentum,
                                             epsilon=recipe.epsilon, **common)
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay,
                                           **{k: v for k, v in common.items()
                                              if k != "weight_decay"})
    if recipe.weight_decay and recipe.no_decay_on_bn_bias:
        # Decaying BN scales/offsets and biases only fights the normalization.
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
