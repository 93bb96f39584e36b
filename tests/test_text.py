import hashlib

import pytest
import torch

from vae_lab.data.text import BucketBatchSampler, TextDataModule, extract_shipped_ptb, read_sentences
from vae_lab.data.vocab import Vocabulary
from vae_lab.errors import ConfigError
from vae_lab.models.sentence_vae import SentenceVAE
from vae_lab.train import default_data_dir


@pytest.fixture(scope="module")
def ptb_files():
    from pathlib import Path

    return extract_shipped_ptb(Path(default_data_dir()) / "ptb")


def test_shipped_ptb_is_mikolovs(ptb_files):
    counts = {"train": (42068, 887521), "valid": (3370, 70390), "test": (3761, 78669)}
    for split, (sentences, tokens) in counts.items():
        text = ptb_files[split].read_text(encoding="utf-8")
        assert hashlib.md5(text.encode()).hexdigest() in {
            "f26c4b92c5fdc7b3f8c7cdcb991d8420", "aa0affc06ff7c36e977d7cd49e3839bf", "8b80168b89c18661a38ef683c0dc3721"}
        parsed = read_sentences(ptb_files[split])
        assert len(parsed) == sentences
        assert sum(len(s) for s in parsed) == tokens  # words; <eos> is the line end


def test_ptb_vocabulary(ptb_files):
    vocab = Vocabulary.from_sentences(read_sentences(ptb_files["train"]), max_size=10000)
    assert len(vocab) == 10002  # 9,999 words incl. <unk>, <eos> is the line end; + <pad> <sos> <eos>
    assert vocab.decode(vocab.encode("the <unk> zzzunseen".split())) == ["the", "<unk>", "<unk>"]


def test_text_files_missing_folder_or_file(tmp_path):
    with pytest.raises(ConfigError, match="dataset.path is not set"):
        TextDataModule(str(tmp_path), source="files").prepare_data()
    (tmp_path / "ptb.train.txt").write_text("a b\n")
    with pytest.raises(ConfigError, match=r"dataset.path: no file ptb.valid.txt in .*dataset=ptb"):
        TextDataModule(str(tmp_path), source="files", path=str(tmp_path)).prepare_data()


def test_text_files_reads_a_folder(tmp_path):
    for split, text in (("train", "a b c\nb c\n\n"), ("valid", "a c\n"), ("test", "c d\n")):
        (tmp_path / f"my.{split}.txt").write_text(text)
    dm = TextDataModule(str(tmp_path), source="files", path=str(tmp_path), train_file="my.train.txt",
                        valid_file="my.valid.txt", test_file="my.test.txt", batch_size=2)
    dm.prepare_data()
    dm.setup()
    assert len(dm.datasets["train"]) == 2 and len(dm.vocab) == 4 + 3
    batch = next(iter(dm.test_dataloader()))
    assert batch["tokens"].tolist() == [[dm.vocab.stoi["c"], dm.vocab.unk]]


def test_bucket_sampler_covers_each_index_once_with_little_padding():
    lengths = [(i * 7) % 50 + 1 for i in range(1000)]
    sampler = BucketBatchSampler(lengths, batch_size=32, seed=0)
    batches = list(iter(sampler))
    assert sorted(i for b in batches for i in b) == list(range(1000)) and len(batches) == len(sampler)
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert padding / sum(lengths) < 0.1
    assert list(iter(sampler)) != batches  # a new order each epoch


def tiny_vae(word_dropout: float = 0.0) -> SentenceVAE:
    vocab = Vocabulary(["a", "b", "c", "d"])
    return SentenceVAE(vocab, rnn_type="lstm", embedding_dim=8, hidden_dim=8, latent_dim=3,
                       word_dropout=word_dropout, max_decode_length=5)


def test_word_dropout_only_at_training():
    torch.manual_seed(0)
    model = tiny_vae(word_dropout=1.0)
    tokens = torch.tensor([[4, 5, 6], [7, 4, 0]])
    inputs, targets = model.decoder_io(tokens, torch.tensor([3, 2]))
    assert targets.tolist() == [[4, 5, 6, 2], [7, 4, 2, 0]]
    model.train()
    dropped = model.drop_words(inputs)
    assert dropped.tolist() == [[1, 3, 3, 3], [1, 3, 3, 0]]  # <sos> and <pad> kept
    model.eval()
    assert torch.equal(model.drop_words(inputs), inputs)


def test_log_weights_shapes_and_units():
    torch.manual_seed(0)
    model = tiny_vae()
    batch = {"tokens": torch.tensor([[4, 5, 6], [7, 4, 0]]), "lengths": torch.tensor([3, 2])}
    lw = model.log_weights(batch, num_samples=4)
    assert lw.log_likelihood.shape == lw.prior.shape == lw.posterior.shape == (4, 2)
    assert lw.kl_per_dim.shape == (2, 3) and lw.num_units.tolist() == [4.0, 3.0]
    assert torch.all(lw.log_likelihood < 0)
    # padding does not change a sentence's likelihood
    model.eval()
    z = torch.randn(1, 3)
    short = model.reconstruction_log_prob(torch.tensor([[7, 4]]), torch.tensor([2]), z)
    padded = model.reconstruction_log_prob(torch.tensor([[7, 4, 0, 0]]), torch.tensor([2]), z)
    torch.testing.assert_close(short, padded)


def test_decoding_stops_and_interpolates():
    model = tiny_vae().eval()
    samples = model.sample_outputs(4, generator=torch.Generator().manual_seed(0)).lines
    assert len(samples) == 4 and all(len(s.split()) <= 6 for s in samples)
    assert len(model.interpolate("a b", "c d", steps=3)) == 5
