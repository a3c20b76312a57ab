"""Knowledge distillation (Hinton et al. 2015) as a `keras.Model` training wrapper."""

import keras
from keras import ops


class Distiller(keras.Model):
    """Trains `student` on `(1 - alpha) * task loss + alpha * T^2 * KL(teacher_T || student_T)`
    where `_T` are the softened softmaxes at `temperature`; both models output logits.

    The loss lives in `compute_loss`, which Keras' own train step calls on every backend;
    the frozen teacher runs in inference mode. `call` is the student's, so metrics, eval
    and predictions are the student's; save `distiller.student`, not the wrapper.
    """

    def __init__(self, student, teacher, alpha=0.5, temperature=4.0, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{student.name}_distiller"), **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Distillation alpha must be in [0, 1], got {alpha}.")
        if temperature <= 0:
            raise ValueError(f"Distillation temperature must be > 0, got {temperature}.")
        if tuple(student.output_shape[1:]) != tuple(teacher.output_shape[1:]):
            raise ValueError(f"Teacher output {teacher.output_shape} does not match the student's "
                             f"{student.output_shape}; distil from a teacher trained on the same "
                             "classes.")
        self.student = student
        self.teacher = teacher
        teacher.trainable = False
        self.alpha = alpha
        self.temperature = temperature

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        task = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if not self.alpha:
            return task
        t = self.temperature
        teacher = ops.softmax(ops.cast(self.teacher(x, training=False), "float32") / t)
        log_student = ops.log_softmax(ops.cast(y_pred, "float32") / t)
        kl = ops.sum(teacher * (ops.log(ops.maximum(teacher, 1e-8)) - log_student), axis=-1)
        # T^2 keeps the soft-target gradients on the scale of the hard ones.
        return (1.0 - self.alpha) * task + self.alpha * t * t * ops.mean(kl)
