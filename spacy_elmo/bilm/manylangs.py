"""ELMoForManyLangs (HIT-SCIR) models as an :class:`ElmoBiLM`, computing what their own
``Embedder.sents2elmo`` computes (docs/languages.md).

The network is ELMo's: a char CNN with highways, a projection and two stacks of LSTM cells
with projection and clipping, whose layers the biLM reports as it does for AllenNLP models.
What differs is mapped onto the same modules:

* Tokens are read through lexicons (:class:`LexiconVocabulary`), not UTF-8 bytes: a token's
  ids are its ``word.dic`` id followed by its ``char.dic`` character ids.
* A word embedding sits beside the char CNN; the projection reads both
  (:class:`LexiconTokenEncoder`).
* The highway gate weighs the input rather than the transform: the gate weights are stored
  negated, as ``σ(-z) = 1 - σ(z)``.
* The LSTM cell's gates come in the order ``i, f, g, o`` with the forget bias inside the stored
  bias; they are reordered to the TensorFlow order of :mod:`.lstm`, with no run-time forget bias.

Every conversion is inverted exactly when the model is saved (:meth:`ManyLangsBiLM.save`
writes the published layout back).
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ElmoWeightsError
from ..files import PathLike
from .inference_precision import TokenEncoderKernels
from .lstm import ElmoLstm
from .manylangs_io import (
    BOS,
    BOW,
    CHAR_LEXICON_FILE,
    CHAR_SPECIALS,
    ENCODER_FILE,
    EOS,
    EOW,
    FORMAT,
    OOV,
    PAD,
    TOKEN_EMBEDDER_FILE,
    WORD_LEXICON_FILE,
    WORD_SPECIALS,
    ManyLangsNetwork,
    arrays_from_hdf5,
    check_lexicon,
    check_state,
    model_files,
    read_lexicon,
    read_network,
    read_state_dict,
    serialized_lexicon,
    write_model,
)
from .model import ElmoBiLM
from .options import ElmoOptions
from .tensors import conv_bias
from .token_encoder import TokenEncoder
from .weights_io import weights_to_bytes

SERIALIZED_SOURCE = "<serialized ELMoForManyLangs model>"


class LexiconVocabulary:
    """Tokens to the ids an ELMoForManyLangs model reads, exactly as its reference code makes them.

    A token longer than ``max_chars - 2`` characters (code points) is cut to that length first,
    and both its word and its characters are looked up in the cut form. Its ids are its word id
    (``<oov>``'s when unknown; 0 without a word lexicon), then ``max_chars`` character ids:
    a start marker, one id per character (``<oov>``'s when unknown), an end marker, ``<pad>``.
    The reference starts every token with the id of ``<eow>`` and ends it with that of
    ``<bow>`` (the two are swapped in its batching code, in training as in inference), and so
    does this class. ``<bos>`` and ``<eos>`` are spelled as one character each, whether they
    are the sentence boundaries or a token of the text.
    """

    def __init__(self, chars: Mapping[str, int], words: Optional[Mapping[str, int]], max_chars: int) -> None:
        self.chars = dict(chars)
        self.words = None if words is None else dict(words)
        self.max_chars = max_chars
        self.start_id, self.end_id = self.chars[EOW], self.chars[BOW]
        self.char_oov, self.padding_id = self.chars[OOV], self.chars[PAD]
        self.word_oov = 0 if self.words is None else self.words[OOV]

    def token_ids(self, token: str) -> List[int]:
        """``1 + max_chars`` ids of one token: its word id, then its character ids."""
        if len(token) + 2 > self.max_chars:
            token = token[: self.max_chars - 2]
        word = self.word_oov if self.words is None else self.words.get(token, self.word_oov)
        spelled = [self.chars[token]] if token in (BOS, EOS) else [self.chars.get(char, self.char_oov) for char in token]
        ids = [word, self.start_id, *spelled, self.end_id]
        return ids + [self.padding_id] * (1 + self.max_chars - len(ids))

    def boundary_ids(self) -> np.ndarray:
        """Ids of the sentence boundaries ``<bos>`` and ``<eos>``, ``(2, 1 + max_chars)``."""
        return np.array([self.token_ids(BOS), self.token_ids(EOS)], dtype=np.int64)

    def index_batch(self, sentences: Sequence[Sequence[str]]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids of the batch's distinct tokens ``(U, 1 + max_chars)``, an index into them
        ``(B, T)`` (0 at padded slots) and the lengths ``(B,)``."""
        position: Dict[str, int] = {}
        rows: List[List[int]] = []
        longest = max((len(s) for s in sentences), default=0)
        token_index = np.zeros((len(sentences), longest), dtype=np.int64)
        for row, sentence in enumerate(sentences):
            for column, token in enumerate(sentence):
                found = position.get(token)
                if found is None:
                    found = position[token] = len(rows)
                    rows.append(self.token_ids(token))
                token_index[row, column] = found
        ids = np.array(rows, dtype=np.int64).reshape(len(rows), 1 + self.max_chars)
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        return ids, token_index, lengths


class LexiconTokenEncoder(TokenEncoder):
    """Token vectors from a word embedding and the char CNN over lexicon ids, projected together.

    Reads rows of ``1 + C`` ids (see :class:`LexiconVocabulary`); with ``word_dim = 0`` the word
    id is ignored and the projection reads the char CNN alone, as in the reference.
    """

    def __init__(self, options: ElmoOptions, n_chars: int, padding_id: int, n_words: int, word_dim: int) -> None:
        super().__init__(options, n_chars=n_chars, padding_id=padding_id)
        self.word_embedding = nn.Parameter(torch.zeros(n_words, word_dim)) if word_dim > 0 else None
        self.projection = nn.Parameter(torch.zeros(word_dim + options.n_filters, options.projection_dim))

    def forward(self, ids: torch.Tensor, kernels: Optional[TokenEncoderKernels] = None) -> torch.Tensor:
        """Token vectors ``(U, P)`` of id rows ``(U, 1 + C)``."""
        if ids.shape[0] == 0:
            return self.projection_bias.new_zeros((0, self.projection.shape[1]))
        x = self.char_features(ids[:, 1:], kernels)
        if self.word_embedding is not None:
            words = ids[:, 0]
            n_words = self.word_embedding.shape[0]
            if int(words.min()) < 0 or int(words.max()) >= n_words:
                raise ValueError(f"word ids must be in 0..{n_words - 1} (LexiconVocabulary makes them)")
            x = torch.cat([F.embedding(words, self.word_embedding), x], dim=1)
        return torch.addmm(self.projection_bias, x, self.projection) if kernels is None else kernels.projection(x)


def _swap_gates(weight: torch.Tensor, hidden: int) -> torch.Tensor:
    """Gate blocks ``i, f, g, o`` ↔ ``i, g, f, o`` along the last axis (its own inverse)."""
    i, f, g, o = weight.unflatten(-1, (4, hidden)).unbind(-2)
    return torch.cat([i, g, f, o], dim=-1)


class ManyLangsBiLM(ElmoBiLM):
    """An ELMoForManyLangs model: the :class:`ElmoBiLM` API over lexicon ids (see the module docs).

    ``forward`` takes the id rows of :meth:`index_batch`; every output matches the reference's
    ``sents2elmo(..., output_layer=-2)`` for a batch from a fresh ``Embedder`` (whose encoder
    starts from zeros) to float32 rounding.
    """

    cache_key_dtype = torch.int32
    token_encoder: LexiconTokenEncoder

    def __init__(
        self, network: ManyLangsNetwork, chars: Mapping[str, int], words: Optional[Mapping[str, int]], **kwargs: Any
    ) -> None:
        vocabulary = LexiconVocabulary(chars, words, network.max_characters_per_token)
        digest = hashlib.sha256(json.dumps([serialized_lexicon(chars), serialized_lexicon(words)]).encode("utf-8"))
        options = network.to_options({FORMAT: {"network": network.raw, "lexicons_sha256": digest.hexdigest()}})
        encoder = LexiconTokenEncoder(
            options,
            n_chars=len(vocabulary.chars),
            padding_id=vocabulary.padding_id,
            n_words=0 if words is None else len(words),
            word_dim=network.word_dim,
        )
        super().__init__(
            options,
            token_encoder=encoder,
            lstm=ElmoLstm(options, forget_bias=0.0),
            boundary_ids=vocabulary.boundary_ids(),
            **kwargs,
        )
        self.network = network
        self.vocabulary = vocabulary

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_directory(cls, directory: PathLike, **kwargs: Any) -> "ManyLangsBiLM":
        """Load a model directory in the published layout (see :mod:`.manylangs_io`), checked
        file by file; ``kwargs`` as for :class:`ElmoBiLM` (``stateful``, ``token_cache_size``, ...)."""
        path = Path(directory)
        model_files(path)
        network = read_network(path)
        chars = read_lexicon(path / CHAR_LEXICON_FILE)
        words: Optional[Dict[str, int]] = None
        if network.word_dim > 0:
            if not (path / WORD_LEXICON_FILE).is_file():
                raise ElmoWeightsError(
                    f"ELMoForManyLangs model directory {path} has no {WORD_LEXICON_FILE}, which its network "
                    f"({network.file_name}: word_dim={network.word_dim}) needs: unpack the whole published archive."
                )
            words = read_lexicon(path / WORD_LEXICON_FILE)
        cls._check_lexicons(network, chars, words, path / CHAR_LEXICON_FILE, path / WORD_LEXICON_FILE)
        token_state = read_state_dict(
            path / TOKEN_EMBEDDER_FILE, network.token_embedder_shapes(len(chars), len(words or ())), network
        )
        encoder_state = read_state_dict(path / ENCODER_FILE, network.encoder_shapes(), network)
        model = cls(network, chars, words, **kwargs)
        model.load_reference_state(token_state, encoder_state)
        return model.eval()

    @staticmethod
    def _check_lexicons(
        network: ManyLangsNetwork,
        chars: Mapping[str, int],
        words: Optional[Mapping[str, int]],
        chars_source: PathLike,
        words_source: PathLike,
    ) -> None:
        check_lexicon(chars, CHAR_SPECIALS, len(chars), chars_source, "char_emb_layer.embedding.weight")
        if words is not None:
            check_lexicon(words, WORD_SPECIALS, len(words), words_source, "word_emb_layer.embedding.weight")

    def load_reference_state(self, token_embedder: Mapping[str, torch.Tensor], encoder: Mapping[str, torch.Tensor]) -> None:
        """Copy checked state dicts (the reference's tensor names) into the modules."""
        network, te = self.network, self.token_encoder
        F_ = network.n_filters
        with torch.no_grad():
            if te.word_embedding is not None:
                te.word_embedding.copy_(token_embedder["word_emb_layer.embedding.weight"])
            te.char_embedding.copy_(token_embedder["char_emb_layer.embedding.weight"])
            for i, conv in enumerate(te.convolutions):
                conv.weight.copy_(token_embedder[f"convolutions.{i}.weight"])
                conv_bias(conv).copy_(token_embedder[f"convolutions.{i}.bias"])
            for k, highway in enumerate(te.highways):
                weight = token_embedder[f"highways._layers.{k}.weight"]  # (2F, F): transform rows, then gate rows
                bias = token_embedder[f"highways._layers.{k}.bias"]
                highway.weight.copy_(torch.cat([-weight[F_:].t(), weight[:F_].t()], dim=1))
                highway.bias.copy_(torch.cat([-bias[F_:], bias[:F_]]))
            te.projection.copy_(token_embedder["projection.weight"].t())
            te.projection_bias.copy_(token_embedder["projection.bias"])
            H = network.lstm_dim
            for index, layer in enumerate(self.lstm.layers):
                for direction, name in enumerate(("forward", "backward")):
                    prefix = f"{name}_layer_{index}"
                    layer.input_weight[direction].copy_(_swap_gates(encoder[f"{prefix}.input_linearity.weight"].t(), H))
                    layer.recurrent_weight[direction].copy_(_swap_gates(encoder[f"{prefix}.state_linearity.weight"].t(), H))
                    layer.bias[direction].copy_(_swap_gates(encoder[f"{prefix}.state_linearity.bias"], H))
                    layer.projection[direction].copy_(encoder[f"{prefix}.state_projection.weight"].t())
        self.weights_changed()

    def reference_state(self) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """The ``token_embedder.pkl`` and ``encoder.pkl`` state dicts; exact inverse of :meth:`load_reference_state`."""
        te, F_, H = self.token_encoder, self.network.n_filters, self.network.lstm_dim
        token: Dict[str, torch.Tensor] = {}
        with torch.no_grad():
            if te.word_embedding is not None:
                token["word_emb_layer.embedding.weight"] = te.word_embedding.detach().clone()
            token["char_emb_layer.embedding.weight"] = te.char_embedding.detach().clone()
            for i, conv in enumerate(te.convolutions):
                token[f"convolutions.{i}.weight"] = conv.weight.detach().clone()
                token[f"convolutions.{i}.bias"] = conv_bias(conv).detach().clone()
            for k, highway in enumerate(te.highways):
                weight, bias = highway.weight.detach(), highway.bias.detach()
                token[f"highways._layers.{k}.weight"] = torch.cat([weight[:, F_:].t(), -weight[:, :F_].t()]).contiguous()
                token[f"highways._layers.{k}.bias"] = torch.cat([bias[F_:], -bias[:F_]])
            token["projection.weight"] = te.projection.detach().t().contiguous()
            token["projection.bias"] = te.projection_bias.detach().clone()
            encoder: Dict[str, torch.Tensor] = {}
            for index, layer in enumerate(self.lstm.layers):
                for direction, name in enumerate(("forward", "backward")):
                    prefix = f"{name}_layer_{index}"
                    encoder[f"{prefix}.input_linearity.weight"] = _swap_gates(layer.input_weight[direction], H).t().contiguous()
                    encoder[f"{prefix}.state_linearity.weight"] = (
                        _swap_gates(layer.recurrent_weight[direction], H).t().contiguous()
                    )
                    encoder[f"{prefix}.state_linearity.bias"] = _swap_gates(layer.bias[direction], H).detach().clone()
                    encoder[f"{prefix}.state_projection.weight"] = layer.projection[direction].detach().t().contiguous()
        return token, encoder

    # ------------------------------------------------------------------ tokens

    def index_batch(self, sentences: Sequence[Sequence[str]]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lexicon ids of the batch's distinct tokens, an index into them and lengths (see :class:`LexiconVocabulary`)."""
        return self.vocabulary.index_batch(sentences)

    # ------------------------------------------------------------------ saving

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """Every weight in the reference's naming, ``token_embedder/<name>`` and ``encoder/<name>``."""
        token, encoder = self.reference_state()
        arrays = {f"token_embedder/{k}": v.cpu().numpy() for k, v in token.items()}
        arrays.update({f"encoder/{k}": v.cpu().numpy() for k, v in encoder.items()})
        return arrays

    def save(self, directory: PathLike) -> None:
        """Write the model in the published layout, which the reference package loads too."""
        token, encoder = self.reference_state()
        write_model(directory, self.network, self.vocabulary.chars, self.vocabulary.words, token, encoder)

    def serialized_options(self) -> Dict[str, Any]:
        """The JSON object :meth:`to_bytes` stores as ``options``: network and lexicons."""
        return {
            "format": FORMAT,
            "network_file": self.network.file_name,
            "network": self.network.raw,
            "char_lexicon": serialized_lexicon(self.vocabulary.chars),
            "word_lexicon": serialized_lexicon(self.vocabulary.words),
        }

    def to_bytes(self) -> Dict[str, bytes]:
        """``options`` (network and lexicons, JSON) and ``weights`` (HDF5, :meth:`to_arrays`), for pipelines."""
        options = json.dumps(self.serialized_options(), ensure_ascii=False, sort_keys=True).encode("utf-8")
        return {"options": options, "weights": weights_to_bytes(self.to_arrays())}

    @classmethod
    def from_serialized(
        cls, options: Mapping[str, Any], weights: bytes, *, source: str = SERIALIZED_SOURCE, **kwargs: Any
    ) -> "ManyLangsBiLM":
        """Inverse of :meth:`to_bytes`, from its parsed ``options`` and its ``weights`` bytes."""
        network = ManyLangsNetwork.from_dict(
            options.get("network"), f"{source} (its network)", str(options.get("network_file") or "network.json")
        )
        chars = _lexicon_from_pairs(options.get("char_lexicon"), f"{source} (its char lexicon)")
        word_pairs = options.get("word_lexicon")
        words = None if word_pairs is None else _lexicon_from_pairs(word_pairs, f"{source} (its word lexicon)")
        if network.word_dim > 0 and words is None:
            raise ElmoWeightsError(f"{source}: the network has word_dim={network.word_dim} but no word lexicon is stored.")
        cls._check_lexicons(network, chars, words, f"{source} (its char lexicon)", f"{source} (its word lexicon)")
        arrays = arrays_from_hdf5(weights, source)
        states = []
        for group, expected in (
            ("token_embedder", network.token_embedder_shapes(len(chars), len(words or ()))),
            ("encoder", network.encoder_shapes()),
        ):
            prefix = f"{group}/"
            state = {k[len(prefix) :]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)}
            states.append(check_state(state, expected, network, f"{source} ({group})"))
        model = cls(network, chars, words, **kwargs)
        model.load_reference_state(states[0], states[1])
        return model.eval()


def _lexicon_from_pairs(pairs: Any, source: str) -> Dict[str, int]:
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], int) for p in pairs
    ):
        raise ElmoWeightsError(f"{source}: expected a list of [token, id] pairs; the data is corrupted. Save the pipeline again.")
    return dict(pairs)
