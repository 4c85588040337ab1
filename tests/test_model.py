"""The CLIP-FlanT5 model: image splicing, forward, gradients, projectors, generation, registration."""

import importlib.metadata
import sys
import types

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, T5ForConditionalGeneration

from clip_flant5.model import (
    CLIPT5Config,
    CLIPT5ForConditionalGeneration,
    build_projector,
    choose_attention,
    flash_attn_importable,
)
from clip_flant5.prompts import IMAGE_TOKEN_INDEX as IMG

# Rows with the image token at the start, in the middle, at the end, absent (text-only), and with
# different amounts of right padding.
ROWS = [
    [5, 6, IMG, 7, 8, 1],
    [IMG, 9, 1],
    [10, 11, 12, 13, 14, 15, 16, 1],
    [17, 18, 19, IMG],
]


def make_batch(model, rows, seed=0):
    gen = torch.Generator().manual_seed(seed)
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    size = model.vision_tower.image_size
    images = torch.randn(len(rows), 3, size, size, generator=gen)
    labels = torch.randint(3, 50, (len(rows), 3), generator=gen)
    labels[:, -1] = 1
    return ids, (ids != 0).long(), images, labels


def reference_embeds(model, row, features):
    """One unpadded row the slow obvious way: text before, the image's P features, text after."""
    ids = torch.tensor(row)
    if IMG not in row:
        return model.shared(ids)
    p = row.index(IMG)
    return torch.cat([model.shared(ids[:p]), features, model.shared(ids[p + 1 :])])


def test_splice_matches_per_row_reference(tiny_model):
    ids, mask, images, _ = make_batch(tiny_model, ROWS)
    features = tiny_model.get_image_features(images)
    n_patches = features.shape[1]
    embeds, new_mask = tiny_model.embed_multimodal(ids, mask, features)
    assert embeds.shape[:2] == new_mask.shape == (len(ROWS), ids.shape[1] + n_patches - 1)
    for i, row in enumerate(ROWS):
        ref = reference_embeds(tiny_model, row, features[i])
        n = ref.shape[0]
        assert new_mask[i].tolist() == [1] * n + [0] * (new_mask.shape[1] - n)
        torch.testing.assert_close(embeds[i, :n], ref, rtol=0, atol=0)


def test_batched_forward_equals_unpadded_single_rows(tiny_model):
    """Right padding and mixing text-only rows change nothing for any sample."""
    ids, mask, images, labels = make_batch(tiny_model, ROWS)
    with torch.no_grad():
        batched = tiny_model(input_ids=ids, attention_mask=mask, images=images, labels=labels).logits
        features = tiny_model.get_image_features(images)
        for i, row in enumerate(ROWS):
            embeds = reference_embeds(tiny_model, row, features[i])[None]
            single = T5ForConditionalGeneration.forward(tiny_model, inputs_embeds=embeds, labels=labels[i : i + 1])
            torch.testing.assert_close(batched[i], single.logits[0], rtol=1e-5, atol=1e-5)


def test_loss_is_mean_cross_entropy_over_labels(tiny_model):
    ids, mask, images, labels = make_batch(tiny_model, ROWS)
    labels[0, -1] = -100  # padding in labels is ignored
    with torch.no_grad():
        out = tiny_model(input_ids=ids, attention_mask=mask, images=images, labels=labels)
    expected = nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_loss_over_a_global_token_count_sums_to_the_token_mean(tiny_model):
    """Micro-batches normalised by the global label count add up to the mean over all label tokens."""
    ids, mask, images, labels = make_batch(tiny_model, ROWS)
    labels[1, 1:] = -100
    with torch.no_grad():
        whole = tiny_model(input_ids=ids, attention_mask=mask, images=images, labels=labels).loss
        n = int((labels != -100).sum())
        parts = [
            tiny_model(
                input_ids=ids[s], attention_mask=mask[s], images=images[s], labels=labels[s], num_items_in_batch=n
            ).loss
            for s in (slice(0, 1), slice(1, 4))
        ]
    torch.testing.assert_close(sum(parts), whole)


def test_text_only_batch_is_plain_t5(tiny_model):
    ids, mask, images, labels = make_batch(tiny_model, [[5, 6, 7, 1], [8, 9, 1]])
    with torch.no_grad():
        ours = tiny_model(input_ids=ids, attention_mask=mask, images=images, labels=labels).logits
        plain = T5ForConditionalGeneration.forward(tiny_model, input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(ours, plain.logits, rtol=0, atol=0)


def test_precomputed_image_features_equal_pixels(tiny_model):
    ids, mask, images, labels = make_batch(tiny_model, ROWS)
    with torch.no_grad():
        from_pixels = tiny_model(input_ids=ids, attention_mask=mask, images=images, labels=labels).logits
        features = tiny_model.get_image_features(images)
        from_features = tiny_model(input_ids=ids, attention_mask=mask, image_features=features, labels=labels).logits
    torch.testing.assert_close(from_pixels, from_features, rtol=0, atol=0)


def test_image_features_shape_and_layer(tiny_model):
    images = torch.randn(2, 3, 64, 64)
    clip = tiny_model.vision_tower.vision_tower
    with torch.no_grad():
        hidden = clip(images, output_hidden_states=True).hidden_states
        features = tiny_model.get_image_features(images)
    assert len(hidden) == clip.config.num_hidden_layers + 1
    assert features.shape == (2, (64 // 8) ** 2, tiny_model.config.d_model)
    # penultimate layer, CLS dropped, no post_layernorm, then the projector
    torch.testing.assert_close(features, tiny_model.mm_projector(hidden[-2][:, 1:]))


@pytest.mark.parametrize(
    "rows, n_images, message",
    [
        ([[5, IMG, IMG, 1], [6, 1]], 2, "row 0 of input_ids holds 2 image tokens"),
        ([[5, IMG, 1], [6, IMG, 1]], 3, "got 3 images for a batch of 2 samples"),
        ([[5, IMG, 1], [6, IMG, 1]], 1, "got 1 images for a batch of 2 samples"),
    ],
)
def test_image_count_errors_name_both_numbers(tiny_model, rows, n_images, message):
    ids, mask, _, _ = make_batch(tiny_model, rows)
    images = torch.randn(n_images, 3, 64, 64)
    with pytest.raises(ValueError, match=message):
        tiny_model(input_ids=ids, attention_mask=mask, images=images, decoder_input_ids=ids[:, :1])


def test_image_tokens_without_images_or_with_left_padding_raise(tiny_model):
    ids = torch.tensor([[5, IMG, 1]])
    with pytest.raises(ValueError, match="1 image tokens but no images"):
        tiny_model.embed_multimodal(ids, None, None)
    left_padded = torch.tensor([[0, 5, IMG, 1], [6, 7, IMG, 1]])
    with pytest.raises(ValueError, match="right-padded"):
        tiny_model.embed_multimodal(left_padded, (left_padded != 0).long(), torch.randn(2, 64, 64))


def _grads(model, train_language):
    model.train()
    model.set_trainable(train_language=train_language)
    ids, mask, images, labels = make_batch(model, ROWS)
    model(input_ids=ids, attention_mask=mask, images=images, labels=labels).loss.backward()
    return {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_stage1_trains_only_the_projector(tiny_model):
    with_grad = _grads(tiny_model, train_language=False)
    assert with_grad == {n for n, _ in tiny_model.named_parameters() if n.startswith("mm_projector.")}
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable == with_grad


def test_stage2_trains_t5_and_projector_never_clip(tiny_model):
    with_grad = _grads(tiny_model, train_language=True)
    names = {n for n, _ in tiny_model.named_parameters()}
    clip = {n for n in names if n.startswith("vision_tower.")}
    assert clip and not clip & with_grad
    assert not any(p.requires_grad for p in tiny_model.vision_tower.parameters())
    # every T5 weight and the projector get a gradient (the encoder's embedding is shared.weight)
    assert with_grad == names - clip


@pytest.mark.parametrize(
    "kind, keys",
    [
        ("linear", ["0.bias", "0.weight"]),
        ("mlp2x_gelu", ["0.bias", "0.weight", "2.bias", "2.weight"]),
        ("mlp3x_gelu", ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]),
    ],
)
def test_projector_layouts(kind, keys):
    projector = build_projector(kind, 24, 16)
    assert sorted(projector.state_dict()) == keys
    assert projector(torch.randn(2, 5, 24)).shape == (2, 5, 16)
    gelus = [m for m in projector if isinstance(m, nn.GELU)]
    assert all(g.approximate == "none" for g in gelus)  # exact erf GELU


def test_identity_and_unknown_projectors():
    x = torch.randn(3, 16)
    assert torch.equal(build_projector("identity", 16, 16)(x), x)
    with pytest.raises(ValueError, match="mm_hidden_size == d_model"):
        build_projector("identity", 24, 16)
    with pytest.raises(ValueError, match="valid: linear, mlp<N>x_gelu, identity"):
        build_projector("mlp_relu", 24, 16)


def test_projector_gets_pytorch_default_init(tiny_model):
    # kaiming-uniform bound 1/sqrt(fan_in) per Linear, not T5's std=1.0 normal
    for layer in (tiny_model.mm_projector[0], tiny_model.mm_projector[2]):
        bound = layer.in_features**-0.5
        assert layer.weight.abs().max() <= bound
        assert layer.weight.std() > bound / 4


def _prompt(model):
    ids, mask, images, _ = make_batch(model, [ROWS[0]])
    return ids, images


def test_generate_greedy_matches_step_by_step_decoding(tiny_model):
    ids, images = _prompt(tiny_model)
    out = tiny_model.generate(input_ids=ids, images=images, max_new_tokens=6, min_new_tokens=6)
    assert out.shape == (1, 7)
    decoded = torch.zeros(1, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(6):
            logits = tiny_model(input_ids=ids, images=images, decoder_input_ids=decoded, use_cache=False).logits
            decoded = torch.cat([decoded, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, decoded)


def test_generate_honours_generation_arguments(tiny_model):
    ids, images = _prompt(tiny_model)
    short = tiny_model.generate(input_ids=ids, images=images, max_new_tokens=2, min_new_tokens=2)
    assert short.shape[1] == 3
    beams = tiny_model.generate(
        input_ids=ids, images=images, num_beams=4, num_return_sequences=3, max_new_tokens=4, min_new_tokens=4
    )
    assert beams.shape == (3, 5) and len({tuple(b.tolist()) for b in beams}) == 3
    samples = set()
    for seed in range(6):
        torch.manual_seed(seed)
        sample = tiny_model.generate(
            input_ids=ids, images=images, do_sample=True, top_k=0, temperature=5.0, max_new_tokens=5
        )
        samples.add(tuple(sample[0].tolist()))
    assert len(samples) > 1
    torch.manual_seed(3)
    again = tiny_model.generate(
        input_ids=ids, images=images, do_sample=True, top_k=0, temperature=5.0, max_new_tokens=5
    )
    torch.manual_seed(3)
    same = tiny_model.generate(input_ids=ids, images=images, do_sample=True, top_k=0, temperature=5.0, max_new_tokens=5)
    assert torch.equal(again, same)


def test_registered_with_auto_classes(tiny_model):
    fields = {k: v for k, v in tiny_model.config.to_diff_dict().items() if k != "model_type"}
    config = AutoConfig.for_model("clip_t5", **fields)
    assert isinstance(config, CLIPT5Config)
    model = AutoModelForSeq2SeqLM.from_config(config)
    assert isinstance(model, CLIPT5ForConditionalGeneration)


def test_config_without_vision_tower_is_an_error():
    with pytest.raises(ValueError, match="must name its vision tower"):
        CLIPT5ForConditionalGeneration(CLIPT5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))


def test_flan_t5_lm_head_stays_untied(tiny_model):
    assert tiny_model.lm_head.weight is not tiny_model.shared.weight
    assert tiny_model.encoder.embed_tokens.weight is tiny_model.shared.weight
    assert not torch.equal(tiny_model.lm_head.weight, tiny_model.shared.weight)


# -- attention implementations ------------------------------------------------------------------------------------
@pytest.fixture
def flash_attn_installed(monkeypatch):
    """`import flash_attn` succeeds (a stand-in module)."""
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))


@pytest.fixture
def flash_attn_missing(monkeypatch):
    """`import flash_attn` raises ImportError (None in sys.modules), installed here or not."""
    monkeypatch.setitem(sys.modules, "flash_attn", None)


def test_flash_attention_only_on_cuda_in_half_precision_when_it_imports(flash_attn_installed):
    assert flash_attn_importable()
    assert choose_attention("cuda", torch.bfloat16) == {"language": "sdpa", "vision": "flash_attention_2"}
    assert choose_attention(torch.device("cuda", 1), torch.float16)["vision"] == "flash_attention_2"
    assert choose_attention("cuda", torch.float32) == {"language": "sdpa", "vision": "sdpa"}  # flash-attn: half only
    assert choose_attention("cpu", torch.bfloat16) == {"language": "sdpa", "vision": "sdpa"}
    assert choose_attention("cpu", torch.float32) == {"language": "sdpa", "vision": "sdpa"}


def test_sdpa_when_flash_attn_does_not_import(flash_attn_missing):
    assert not flash_attn_importable()
    assert choose_attention("cuda", torch.bfloat16) == {"language": "sdpa", "vision": "sdpa"}


def test_cpu_choice_does_not_import_flash_attn(monkeypatch):
    monkeypatch.setattr("clip_flant5.model.flash_attn_importable", lambda: pytest.fail("flash_attn imported"))
    assert choose_attention("cpu", torch.bfloat16)["vision"] == "sdpa"


def test_every_sub_model_is_built_on_sdpa(tiny_model):
    assert tiny_model.attention_implementations() == {"language": "sdpa", "vision": "sdpa"}
    assert tiny_model.encoder.config._attn_implementation == tiny_model.decoder.config._attn_implementation == "sdpa"


def test_set_attention_sets_each_tower_and_keeps_the_outputs(tiny_model):
    ids, mask, images, labels = make_batch(tiny_model, ROWS)
    with torch.no_grad():
        sdpa = tiny_model(input_ids=ids, attention_mask=mask, images=images, labels=labels).logits
    assert tiny_model.set_attention({"language": "eager", "vision": "sdpa"}) == {"language": "eager", "vision": "sdpa"}
    assert tiny_model.encoder.config._attn_implementation == tiny_model.decoder.config._attn_implementation == "eager"
    assert tiny_model.set_attention({"vision": "eager"}) == {"language": "eager", "vision": "eager"}
    with torch.no_grad():
        eager = tiny_model(input_ids=ids, attention_mask=mask, images=images, labels=labels).logits
    torch.testing.assert_close(eager, sdpa, rtol=1e-4, atol=1e-5)
    assert tiny_model.set_attention(choose_attention("cpu", torch.float32)) == {"language": "sdpa", "vision": "sdpa"}
    with pytest.raises(ValueError, match="unknown attention keys"):
        tiny_model.set_attention({"t5": "sdpa"})


def test_t5_has_no_flash_attention(tiny_model):
    with pytest.raises(ValueError, match="does not support Flash Attention"):
        tiny_model.set_attention({"language": "flash_attention_2"})


def test_flash_attention_needs_the_package(tiny_model):
    try:
        importlib.metadata.version("flash-attn")
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        pytest.skip("flash-attn is installed")
    with pytest.raises(ImportError, match="FlashAttention2"):
        tiny_model.set_attention({"vision": "flash_attention_2"})
    assert tiny_model.attention_implementations()["vision"] == "sdpa"
