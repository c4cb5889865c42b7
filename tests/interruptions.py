"""A Ctrl-C at a chosen epoch, for the tests of resumption."""

from tf_distill.backend import keras


class InterruptAfterEpoch(keras.callbacks.Callback):
    """Ctrl-C once epoch `epoch` (0-based) is backed up (it runs after the backup)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt
