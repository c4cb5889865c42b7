"""Running a fixed-length causal LM in the LiteRT interpreter, and greedy decoding.

The exported signature takes `token_ids` and `padding_mask`, both int32
`[1, L]`, and returns `logits` `[1, L, V]` (see `export.language`). A prefix
of `n <= L` tokens goes in the first `n` slots with `padding_mask` 1 there
and 0 after; the next token is the argmax of the logits at slot `n - 1`.
Once the text is longer than `L`, only its last `L` tokens are fed (a
sliding window): GPT-2 style models have learned absolute positions, so the
window is what both `greedy_decode` and its Keras twin `keras_greedy_decode`
compute, step for step.
"""

import os

import numpy as np

from tf_distill.export.errors import ExportError

TOKEN_IDS = "token_ids"
PADDING_MASK = "padding_mask"


class CausalLMRunner:
    """The LiteRT interpreter behind `logits = runner(token_ids, padding_mask)`.

    Finds the two inputs by name (`token_ids`, `padding_mask`), so it runs the
    files `export_causal_lm` writes and any other conversion with those input
    names. Interpreter errors become `ExportError`.

    Args:
        litert_model: `.tflite` bytes, a path, or an `ai_edge_litert`
            `Interpreter` (used as is).
        num_threads: Interpreter threads (ignored for an `Interpreter`).
    """

    def __init__(self, litert_model, num_threads=1):
        # Imported here so that importing tf_distill stays light.
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(litert_model, Interpreter):
            self.interpreter = litert_model
        else:
            if isinstance(litert_model, (str, os.PathLike)):
                with open(litert_model, "rb") as handle:
                    litert_model = handle.read()
            try:
                self.interpreter = Interpreter(
                    model_content=bytes(litert_model), num_threads=num_threads
                )
            except (RuntimeError, ValueError) as error:
                raise ExportError(
                    f"The LiteRT interpreter cannot load the model: {error}"
                ) from error
        inputs = {}
        for detail in self.interpreter.get_input_details():
            for name in (TOKEN_IDS, PADDING_MASK):
                if name in detail["name"]:
                    inputs[name] = detail
        outputs = self.interpreter.get_output_details()
        if set(inputs) != {TOKEN_IDS, PADDING_MASK} or len(outputs) != 1:
            names = [detail["name"] for detail in self.interpreter.get_input_details()]
            raise ExportError(
                "A causal LM LiteRT model needs inputs named `token_ids` and "
                f"`padding_mask` and one output. Received inputs {names} and "
                f"{len(outputs)} outputs."
            )
        shape = [int(size) for size in inputs[TOKEN_IDS]["shape"]]
        if len(shape) != 2 or shape[0] != 1:
            raise ExportError(
                f"A causal LM LiteRT model takes `token_ids` of shape [1, L]. Received shape {shape}."
            )
        self._inputs = inputs
        self._output = outputs[0]
        self.sequence_length = shape[1]
        # The number of token ids the model scores (its logits' last axis).
        self.vocabulary_size = int(outputs[0]["shape"][-1])
        try:
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            raise ExportError(
                f"The LiteRT interpreter cannot prepare the model: {error}"
            ) from error

    def __call__(self, token_ids, padding_mask):
        """Logits `[1, L, V]` (float32) for int `[1, L]` ids and mask."""
        feeds = {TOKEN_IDS: token_ids, PADDING_MASK: padding_mask}
        try:
            for name, detail in self._inputs.items():
                value = np.asarray(feeds[name]).reshape(1, self.sequence_length)
                self.interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))
            self.interpreter.invoke()
            logits = self.interpreter.get_tensor(self._output["index"])
        except (RuntimeError, ValueError) as error:
            message = " ".join(str(error).split())[:500]
            raise ExportError(
                f"The LiteRT interpreter failed to run the model: {message}"
            ) from error
        return np.asarray(logits, np.float32)


def greedy_decode(interpreter_or_path, prompt_ids, num_tokens=32, num_threads=1):
    """Generates `num_tokens` tokens greedily with a fixed-length LiteRT LM.

    Each step re-runs the `[1, L]` signature on the text so far (its last
    `L` tokens when longer), padded with `padding_mask` 0, and appends the
    argmax of the logits at the last real position.

    Args:
        interpreter_or_path: An `ai_edge_litert` `Interpreter`, the `.tflite`
            path, or its bytes, as written by `export_causal_lm`.
        prompt_ids: 1-D sequence of at least one token id.
        num_tokens: Tokens to generate (>= 1).
        num_threads: Interpreter threads when a path or bytes is given.

    Returns:
        The generated ids, an int32 array of shape `[num_tokens]` (the
        prompt not included).

    Raises:
        ValueError: For an empty or non 1-D prompt, a token id outside the
            model's vocabulary, or `num_tokens < 1`.
        ExportError: If the interpreter cannot run the model.
    """
    runner = (
        interpreter_or_path
        if isinstance(interpreter_or_path, CausalLMRunner)
        else CausalLMRunner(interpreter_or_path, num_threads=num_threads)
    )
    return _greedy(
        runner, prompt_ids, num_tokens, runner.sequence_length, "greedy_decode",
        runner.vocabulary_size,
    )


def keras_greedy_decode(model, prompt_ids, num_tokens=32, sequence_length=None):
    """`greedy_decode`'s loop run on the Keras model: the reference to compare with.

    Args:
        model: A Keras causal LM taking `{"token_ids", "padding_mask"}` and
            returning logits `[batch, length, vocabulary]` (a KerasHub
            `CausalLM` with `preprocessor=None`).
        prompt_ids, num_tokens: As in `greedy_decode`.
        sequence_length: The exported `L`; defaults to the backbone's
            `max_sequence_length`.

    Returns:
        The generated ids, int32 `[num_tokens]`.
    """
    if sequence_length is None:
        sequence_length = int(model.backbone.max_sequence_length)

    def run(token_ids, padding_mask):
        inputs = {TOKEN_IDS: token_ids, PADDING_MASK: padding_mask.astype(bool)}
        return np.asarray(model(inputs, training=False), np.float32)

    vocabulary_size = getattr(getattr(model, "backbone", None), "vocabulary_size", None)
    return _greedy(
        run, prompt_ids, num_tokens, sequence_length, "keras_greedy_decode", vocabulary_size
    )


def check_prompt(prompt_ids, num_tokens, vocabulary_size, caller):
    """`prompt_ids` as int32 NumPy, after checking it and `num_tokens`.

    Raises:
        ValueError: naming `caller`, for a prompt that is not a non-empty
            1-D sequence of ids in `[0, vocabulary_size)`, or `num_tokens` < 1.
    """
    prompt = np.asarray(prompt_ids)
    if prompt.ndim != 1 or prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(
            f"{caller}: `prompt_ids` must be a non-empty 1-D sequence of token ids. "
            f"Received: prompt_ids of shape {prompt.shape} and dtype {prompt.dtype}"
        )
    if vocabulary_size is not None:
        outside = [int(token) for token in prompt if not 0 <= token < vocabulary_size]
        if outside:
            raise ValueError(
                f"{caller}: `prompt_ids` must be token ids in [0, {vocabulary_size}) (the "
                f"model's vocabulary). Received: {outside[:5]} outside it"
            )
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(
            f"{caller}: `num_tokens` must be an integer >= 1. Received: num_tokens={num_tokens!r}"
        )
    return prompt.astype(np.int32)


def _greedy(run, prompt_ids, num_tokens, sequence_length, caller, vocabulary_size=None):
    prompt = check_prompt(prompt_ids, num_tokens, vocabulary_size, caller)
    text = [int(token) for token in prompt]
    for _ in range(num_tokens):
        window = text[-sequence_length:]
        token_ids = np.zeros((1, sequence_length), np.int32)
        padding_mask = np.zeros((1, sequence_length), np.int32)
        token_ids[0, : len(window)] = window
        padding_mask[0, : len(window)] = 1
        logits = run(token_ids, padding_mask)
        text.append(int(np.argmax(logits[0, len(window) - 1])))
    return np.array(text[len(prompt) :], np.int32)
