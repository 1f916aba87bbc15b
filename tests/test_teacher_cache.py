"""The per-example teacher-output cache on its own: rows by index, verified files, crash consistency."""
import pytest
import torch

from zoo import teacher_cache
from zoo.teacher_cache import ExampleOutputCache


def batch(*index):
    return {"index": torch.tensor(index)}


def test_rows_are_returned_only_when_every_example_is_stored(tmp_path):
    cache = ExampleOutputCache(tmp_path, {"teacher": "t"}, num_examples=4)
    cache.put(batch(0, 2), [{"logits": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}])
    assert cache.get(batch(2, 0), torch.device("cpu"))[0]["logits"].tolist() == [[3.0, 4.0], [1.0, 2.0]]
    assert cache.get(batch(0, 1), torch.device("cpu")) is None
    with pytest.raises(ValueError, match="holds at most"):
        cache.put(batch(1), [{"features": torch.zeros(1, 4096)}])


def test_a_kill_between_the_data_and_the_manifest_write_keeps_the_previous_pair(tmp_path, monkeypatch):
    cache = ExampleOutputCache(tmp_path, {"teacher": "t"}, num_examples=4)
    cache.put(batch(0), [{"logits": torch.tensor([[1.0, 2.0]])}])
    cache.flush()
    cache.put(batch(1), [{"logits": torch.tensor([[5.0, 6.0]])}])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(teacher_cache, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.flush()
    monkeypatch.undo()
    reopened = ExampleOutputCache(tmp_path, {"teacher": "t"}, num_examples=4)
    assert reopened.get(batch(0), torch.device("cpu"))[0]["logits"].tolist() == [[1.0, 2.0]]
    assert reopened.get(batch(1), torch.device("cpu")) is None
    # a finished flush drops the file it replaces (here it rewrites the orphan: same rows, same name)
    reopened.put(batch(1), [{"logits": torch.tensor([[5.0, 6.0]])}])
    reopened.flush()
    assert [p.name for p in tmp_path.glob("*.safetensors")] == [reopened.entry["file"]]
