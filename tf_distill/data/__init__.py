"""Data sets for distillation: one `load(source)` for every format.

Every source ends as the same `DataSplits`: float32 images in `[0, 1]` with a
channel axis, int32 sparse labels, and fixed train/validation/test splits.
Splits carved by tf_distill are stratified and seeded, so the same source and
options give the same examples in each split on every machine, and teacher,
student and baseline are compared on the same validation and test sets.

Sources (`load(source, **options)`):

- `"digits"` (the default): scikit-learn's bundled 8×8 handwritten digits,
  1,797 images, no download. Split 70/15/15.
- A folder of MNIST-format idx files (`train-images-idx3-ubyte[.gz]`,
  `train-labels-idx1-ubyte[.gz]`, `t10k-...`), e.g. MNIST or Fashion-MNIST.
  A `SHA256SUMS` file in the folder is verified.
- A `.npz` file with arrays `x` and `y` (optionally `x_val`/`y_val`,
  `x_test`/`y_test`).
- `"tfds:NAME"` or `{"tfds": NAME, "data_dir": ...}`: a TensorFlow Datasets
  data set, through `tfds.load`.
- `"keras:NAME"`: `keras.datasets.NAME.load_data()` (mnist, fashion_mnist,
  cifar10, cifar100). Keras downloads these on first use, so this source
  needs the internet once; tf_distill's tests only check the dispatch.

Every loaded data set carries a `fingerprint` of its source's content (see
`DataSplits`), so that a run can tell when its data changed.

Text for language models: `load_text(source, sequence_length=...)` reads a
local corpus (default `/usr/share/common-licenses`) with KerasHub's byte
tokenizer, or any KerasHub tokenizer (`tokenizer=`, a preset's), as
next-token windows (`TextSplits`), split by position. Instruction data:
`load_instructions(path, tokenizer)` reads JSONL prompt–response pairs, one
sequence each, whose loss counts the response tokens only; with a
`teacher_tokenizer` the batches also carry the teacher's own tokens.

Modules: `splits` (`DataSplits`), `arrays` (`from_arrays`: checks and
stratified splitting), `idx` (MNIST's file format), `sources` (`load` and one
loader per source), `text` (`load_text`), `instructions`
(`load_instructions`) and `tokenization` (end tokens, fingerprints).
"""

from tf_distill.data.arrays import from_arrays
from tf_distill.data.arrays import stratified_indices
from tf_distill.data.idx import IDX_IMAGES_MAGIC
from tf_distill.data.idx import IDX_LABELS_MAGIC
from tf_distill.data.idx import read_idx
from tf_distill.data.instructions import load_instructions
from tf_distill.data.sources import load
from tf_distill.data.splits import SPLITS
from tf_distill.data.splits import DataSplits
from tf_distill.data.splits import fingerprint_arrays
from tf_distill.data.text import TextSplits
from tf_distill.data.text import load_text

__all__ = [
    "SPLITS",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "DataSplits",
    "load",
    "from_arrays",
    "read_idx",
    "fingerprint_arrays",
    "stratified_indices",
    "TextSplits",
    "load_text",
    "load_instructions",
]
