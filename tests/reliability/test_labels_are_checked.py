"""Labels that cannot be scored fail loudly, naming the split and the row, instead of a silent 100%."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.harness.data import ImageSet, check_labelled
from ssl_bench.harness.errors import DataError


def images(labels: list[int] | torch.Tensor, classes: int = 3) -> ImageSet:
    labels = torch.as_tensor(labels)
    return ImageSet(torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8), labels,
                    tuple(f"c{i}" for i in range(classes)), "test")


def test_well_formed_labels_pass():
    check_labelled(images([0, 1, 2, 1]), "toy test split")


@pytest.mark.parametrize(("labels", "message"), [
    ([0, 1, 5, 1], r"toy test split: label 5 at row 2 is outside 0..2 \(3 classes\)"),
    ([0, -1, 1], r"label -1 at row 1"),
    ([2, 2, 2], r"every row is of one class \('c2'\)"),
    ([], r"no rows"),
])
def test_unscorable_labels_name_the_split_and_row(labels, message):
    with pytest.raises(DataError, match=message):
        check_labelled(images(torch.tensor(labels, dtype=torch.int64)), "toy test split")


def test_float_labels_are_refused_not_truncated():
    data = ImageSet(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.tensor([0.0, 1.5, 1.0]), ("a", "b"), "f")
    with pytest.raises(DataError, match="labels are torch.float32, not int64"):
        check_labelled(data, "toy train split")


@pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
@pytest.mark.parametrize(("values", "arrow_type"), [([0.0, 1.7], "double"), (["cat", "dog"], "string")])
def test_parquet_labels_that_are_not_integers_name_file_and_column(tmp_path, values, arrow_type):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from torchvision.io import encode_png

    from ssl_bench.harness.components import DataContext
    from ssl_bench.plugins.datasets.parquet import ParquetImages

    img = encode_png(torch.zeros(3, 4, 4, dtype=torch.uint8)).numpy().tobytes()
    (tmp_path / "toy").mkdir()
    pq.write_table(pa.table({"img": pa.array([{"bytes": img, "path": "a.png"}] * 2), "label": pa.array(values)}),
                   tmp_path / "toy" / "train.parquet")
    ctx = DataContext(root=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=rf"train.parquet: column 'label' holds {arrow_type} values"):
        ParquetImages(ParquetImages.Params(path="toy")).load("train", ctx)
