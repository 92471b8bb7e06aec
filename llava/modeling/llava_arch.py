"""The multimodal core: every line of visual logic shared by the seven language-model families.

`LlavaMetaModel` is mixed into a family's base model (GPT2Model, LlamaModel, ...) and owns the vision
tower, the resampler, the projector and the spatial/temporal embeddings. `LlavaMetaForCausalLM` is mixed
into the family's causal-LM class and turns `images` (clips or still images) into visual tokens spliced
into the text embeddings where `input_ids` hold IMAGE_TOKEN_INDEX.

Visual inputs are given as one list over the batch, consumed in the order their placeholders appear
(row by row), so a text-only sample simply has no placeholder and no entry. Each entry is a clip
`(T, 3, S, S)` or an image `(3, S, S)`; an image is a one-frame clip. An entry may instead be
`{"patch_features": (T, grid, grid, hidden)}`, the tower's output computed beforehand (the feature
cache): the tower is then skipped for it.

The core's helpers that need no model are modules of their own: the accepted forms of visual inputs
(visual_inputs.py), the splicing of visual tokens into the text (splicing.py), ZeRO-3 (zero3.py).
"""

from __future__ import annotations

import functools
import inspect
import logging

import torch

from .adapter_weights import load_adapter_weights
from .constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from .coordinate_embedding import CoordinateEmbedding, head_input
from .coordinate_tokens import batch_values, coordinate_bins
from .expected_warnings import unmasked_generation_steps
from .frame_sampling import sample_indices
from .position_embedding import VisualPositionEmbedding
from .projector import build_vision_projector, match_output_scale
from .sequence_budget import fit_new_tokens, max_positions  # noqa: F401 (max_positions: imported from here by callers)
from .splicing import pad_batch, splice_sample, truncate_text
from .token_packer import build_vision_resampler
from .vision_settings import VisionSettings
from .vision_tower import VisionTower, build_vision_tower
from .visual_inputs import as_clips, cover_image_token, encoder_view, from_pixel_values
from .zero3 import embedding_std, gathered_parameters, zero3_init

logger = logging.getLogger(__name__)


class LlavaMetaModel:
    """Mixin for a family's base model: builds and owns the visual modules."""

    def __init__(self, config):
        expected = type(self).config_class
        if not isinstance(config, expected):
            raise TypeError(f"{type(self).__name__} needs a {expected.__name__}, got {type(config).__name__}")
        # A config read from a stock checkpoint carries the stock model_type ('gpt2'); the llava type
        # decides how the model is saved, reloaded and converted, so the class's own type wins.
        config.__dict__.pop("model_type", None)
        super().__init__(config)
        self.mm_truncated_sequences = 0
        settings = VisionSettings.from_config(config)
        if settings.vision_tower:
            self._build_vision_modules(build_vision_tower(config), settings)
        if coordinate_bins(config):
            self.mm_coordinates = CoordinateEmbedding(config)

    def build_coordinate_embedding(self) -> None:
        """Adds the coordinate tables that `config.mm_coordinate_bins` asks for (see coordinate_tokens.py's
        `add_coordinate_tokens`), their rows at the word embeddings' scale."""
        std = embedding_std(self.get_input_embeddings().weight)
        with zero3_init():
            tables = CoordinateEmbedding(self.config)
        # After construction: under ZeRO-3 each table is partitioned as soon as it is built.
        with gathered_parameters(tables, modify=True):
            tables.reset_parameters(std)
        self.mm_coordinates = tables.to(self.get_input_embeddings().weight.device)

    def coordinate_embedding(self) -> CoordinateEmbedding | None:
        return getattr(self, "mm_coordinates", None)

    def _build_vision_modules(self, tower: VisionTower, settings: VisionSettings) -> None:
        config = self.config
        # LLaVA clients read these to decide how to write the visual block in a prompt; checkpoints
        # written before they were recorded never used the extra tokens.
        for name in ("mm_use_im_start_end", "mm_use_im_patch_token"):
            if getattr(config, name, None) is None:
                setattr(config, name, False)
        input_grid = (settings.num_frames, tower.grid_size, tower.grid_size)
        self.vision_tower = tower
        self.vision_resampler = build_vision_resampler(settings, tower.hidden_size, input_grid)
        self.mm_projector = build_vision_projector(settings, tower.hidden_size, config.hidden_size)
        self.mm_pos_embed = VisualPositionEmbedding(config.hidden_size, input_grid)

    def get_vision_tower(self) -> VisionTower | None:
        return getattr(self, "vision_tower", None)

    def num_visual_tokens(self, num_frames: int) -> int:
        """Visual tokens one input of `num_frames` frames becomes (an image is one frame)."""
        return self.vision_resampler.num_tokens(num_frames)

    def initialize_vision_modules(self, model_args, fsdp=None) -> bool:
        """Loads the tower named by `model_args.vision_tower`, builds the rest, and records every setting
        in the config so that a saved checkpoint rebuilds itself with no flags.

        `model_args` is a VisionSettings, or any object whose attributes carry settings by their flag names
        (training's arguments, LLaVA's own ModelArguments): what it lacks keeps VisionSettings' default.
        A model that already has its visual modules (a saved llava checkpoint) keeps them: its config is
        the source of truth. `pretrain_mm_mlp_adapter` is loaded in either case. `fsdp` is LLaVA's
        argument, accepted and not needed.

        Returns whether the adapter (resampler, projector, embeddings) starts untrained: built here and
        not loaded from an adapter file. Training uses it to keep a random packer from staying frozen.
        """
        settings = VisionSettings.from_args(model_args)
        config = self.config
        fresh = self.get_vision_tower() is None
        if fresh:
            if not settings.vision_tower:
                raise ValueError(
                    "initialize_vision_modules needs model_args.vision_tower: the folder or hub id of a tower"
                )
            tower = VisionTower.from_pretrained(settings.vision_tower, settings.mm_vision_select_layer)
            settings.write(config)
            # What the tower says about itself: with it, a checkpoint rebuilds the tower without its folder.
            config.mm_vision_config = tower.config.to_dict()
            config.mm_image_processor = tower.image_processor.to_dict()
            config.mm_hidden_size = tower.hidden_size
            target_std = embedding_std(self.get_input_embeddings().weight)
            with zero3_init():
                self._build_vision_modules(tower, settings)
            with gathered_parameters(self.mm_projector, modify=True):
                match_output_scale(self.mm_projector, target_std, tower.hidden_size)
            tower.requires_grad_(False)
        else:
            logger.info("visual modules come from the checkpoint's config (%s)", config.mm_vision_tower)
        adapter = settings.pretrain_mm_mlp_adapter
        if adapter:
            load_adapter_weights(self, adapter)
        return fresh and not adapter


@functools.cache
def _next_definition(cls: type, name: str):
    """The language model's own `name`: the family class holds LlavaMetaForCausalLM's function under
    that name, and the language model's implementation is the next definition after it in the MRO."""
    mine = getattr(LlavaMetaForCausalLM, name)
    seen = False
    for klass in cls.__mro__:
        fn = klass.__dict__.get(name)
        if fn is None:
            continue
        if fn is mine:
            seen = True
        elif seen:
            return fn
    raise TypeError(f"{cls.__name__} does not alias LlavaMetaForCausalLM.{name}")


@functools.cache
def _parameters(fn) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


# Default of `generate(images=...)`: tells a LLaVA-style call (images given, even None) apart from a plain
# transformers call.
_NOT_GIVEN = object()


class LlavaMetaForCausalLM:
    """Mixin for a family's causal-LM class. A family aliases `forward`, `generate` and
    `prepare_inputs_for_generation` from here; each calls the language model's own method after the
    visual tokens are spliced in."""

    def get_model(self):
        return getattr(self, self.base_model_prefix)

    def get_vision_tower(self) -> VisionTower | None:
        return self.get_model().get_vision_tower()

    git = property(encoder_view)  # the name the BabyLM pipeline's DevBench runner reads (encoder_view)

    def _language_model_method(self, name: str):
        return _next_definition(type(self), name).__get__(self, type(self))

    # ----------------------------------------------------------------------------------- encoding
    def encode_videos(self, clips: list) -> list[torch.Tensor]:
        """Each (T, 3, S, S) clip, or `{"patch_features": (T, g, g, C)}`, -> (tokens, hidden) visual tokens
        in the LM's hidden size."""
        model = self.get_model()
        tower = model.get_vision_tower()
        if tower is None:
            raise ValueError("this model has no vision tower; call initialize_vision_modules first")
        max_frames = self.config.mm_num_frames
        clips = list(clips)  # longer clips are replaced by their sampled frames below
        grid_shape = (tower.grid_size, tower.grid_size, tower.hidden_size)
        grids: list[torch.Tensor | None] = [None] * len(clips)
        pixel_clips = []
        for i, clip in enumerate(clips):
            precomputed = clip["patch_features"] if isinstance(clip, dict) else None
            num_frames = (clip if precomputed is None else precomputed).shape[0]
            if num_frames > max_frames:
                clip, precomputed = self._sample_frames(clip, num_frames, max_frames)
                clips[i] = clip
            if precomputed is None:
                pixel_clips.append(i)
            elif tuple(precomputed.shape[1:]) != grid_shape:
                raise ValueError(
                    f"patch_features of shape {tuple(precomputed.shape)} do not fit this tower's (T, {', '.join(map(str, grid_shape))})"
                )
            else:  # converted to the tower's device and dtype once stacked (one copy, not two)
                grids[i] = precomputed
        if pixel_clips:
            frames = torch.cat([clips[i].to(device=tower.device) for i in pixel_clips])
            encoded = tower(frames).split([clips[i].shape[0] for i in pixel_clips])  # each (T, g, g, C)
            for i, grid in zip(pixel_clips, encoded):
                grids[i] = grid
        embed_dtype = self.get_input_embeddings().weight.dtype
        features: list[torch.Tensor | None] = [None] * len(clips)
        # Clips with the same frame count share one resampler call (images and videos differ).
        for num_frames in sorted({g.shape[0] for g in grids}):
            index = [i for i, g in enumerate(grids) if g.shape[0] == num_frames]
            stacked = torch.stack([grids[i].to(tower.device, non_blocking=True) for i in index])
            packed = model.vision_resampler(stacked.to(tower.dtype))
            tokens = model.mm_projector(packed.to(next(model.mm_projector.parameters(), packed).dtype))
            positions = model.vision_resampler.positions(num_frames)
            tokens = tokens + model.mm_pos_embed(positions).to(tokens.dtype)
            coordinates = model.coordinate_embedding()
            if coordinates is not None:  # LAPE: the token's place in the clip, in coordinate units
                grid = (num_frames, tower.grid_size, tower.grid_size)
                tokens = tokens + coordinates.visual_positions(positions, grid).to(tokens.dtype)
            for j, i in enumerate(index):
                features[i] = tokens[j].to(embed_dtype)
        return features

    def _sample_frames(self, clip, num_frames: int, max_frames: int):
        """A longer clip than the model takes (clients send 16-64 frames) keeps `max_frames` of its frames,
        spread uniformly as the video reader spreads them over a file: the centres of equal segments."""
        keep = sample_indices(num_frames, max_frames)
        if not getattr(self, "_logged_frame_sampling", False):
            logger.warning(
                "clips of %d frames are sampled uniformly down to the %d frames this model takes (frames %s); "
                "logged once",
                num_frames,
                max_frames,
                ", ".join(map(str, keep)),
            )
            self._logged_frame_sampling = True
        if isinstance(clip, dict):
            clip = {**clip, "patch_features": clip["patch_features"][keep]}
            return clip, clip["patch_features"]
        return clip[keep], None

    def visual_stand_ins(self, frame_counts, through_tower: bool = False) -> list:
        """Visual inputs that belong to no sample: zeros, one per frame count, the first given as pixels
        where `through_tower` (the tower runs on it), the others as tower features. Passed to `forward`
        as `visual_stand_ins`, they make the visual modules run in a step whose batch lacks the inputs
        that other ranks' batches hold, so that every rank runs the same modules (see
        llava/train/lockstep.py), and change nothing else."""
        tower = self.get_vision_tower()
        stand_ins = []
        for i, frames in enumerate(sorted(frame_counts)):
            if i == 0 and through_tower:
                shape = (frames, 3, tower.image_size, tower.image_size)
                stand_ins.append(torch.zeros(shape, dtype=tower.dtype, device=tower.device))
            else:
                shape = (frames, tower.grid_size, tower.grid_size, tower.hidden_size)
                stand_ins.append({"patch_features": torch.zeros(shape, dtype=tower.dtype, device=tower.device)})
        return stand_ins

    def encode_with_stand_ins(self, clips: list, stand_ins) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """`encode_videos` over the visual inputs and the stand-ins in one call, so that the modules run in
        the order they run on a rank whose samples hold every kind of input (the tower once, then the
        packer once per frame count). Returns the inputs' features and a zero that depends on the
        stand-ins' (None without stand-ins). The zero is exact whatever the stand-ins' values: each is
        multiplied by 0 before summing (no overflow), non-finite values counting as 0."""
        if not stand_ins:
            return self.encode_videos(clips), None
        encoded = self.encode_videos([*clips, *stand_ins])
        zero = sum((torch.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0) * 0).sum() for f in encoded[len(clips) :])
        return encoded[: len(clips)], zero

    def encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, S, S) images -> one (tokens, hidden) tensor per image: images are one-frame clips."""
        return self.encode_videos([image.unsqueeze(0) for image in images])

    # ------------------------------------------------------------------------------------ splicing
    def prepare_inputs_labels_for_multimodal(
        self,
        input_ids,
        position_ids,
        attention_mask,
        past_key_values,
        labels,
        images,
        modalities=None,
        image_sizes=None,
        visual_stand_ins=(),
        coordinate_values=None,
    ):
        """Splices visual tokens in at the placeholders; LLaVA's signature and return order:
        `(None, position_ids, attention_mask, past_key_values, inputs_embeds, labels)`. `image_sizes`
        (LLaVA's original image sizes, for its anyres tiling) is accepted and not needed: every image is
        one frame at the tower's input size.

        Visual positions get IGNORE_INDEX labels. Sequences longer than the LM's positions lose text
        from their end, never a visual token. The output keeps the input's padding side: left-padded
        generation prompts stay left-padded, right-padded training batches stay right-padded.

        `visual_stand_ins` (see `visual_stand_ins()`) are encoded together with the visual inputs and add an
        exact zero to the embeddings: the visual modules take part in the step, no sequence changes.
        `coordinate_values`: the values of coordinate placeholders in `input_ids` (see coordinate_tokens.py).
        """
        if input_ids is None or (images is None and not visual_stand_ins):
            return input_ids, position_ids, attention_mask, past_key_values, None, labels
        clips = as_clips([] if images is None else images, modalities)
        is_placeholder = input_ids == IMAGE_TOKEN_INDEX
        if int(is_placeholder.sum()) != len(clips):
            raise ValueError(
                f"the batch has {int(is_placeholder.sum())} visual placeholders but {len(clips)} visual inputs"
            )
        if not clips and not visual_stand_ins:
            return input_ids, position_ids, attention_mask, past_key_values, None, labels

        visual, zero = self.encode_with_stand_ins(clips, visual_stand_ins)
        # A family whose forward scales every input embedding (transformers 4's Gemma) gets the visual
        # tokens divided by that scale first, so that they reach its layers as under transformers 5.
        scale = getattr(self.get_model(), "visual_input_scale", 1.0)
        features = iter(visual if scale == 1.0 else [f / scale for f in visual])
        text_embeds = self.embed_text(input_ids.masked_fill(is_placeholder, 0), coordinate_values)
        if zero is not None:
            text_embeds = text_embeds + zero
        valid = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        limit = max_positions(self.config)

        sequences = []  # (embeds, labels, is_visual) per sample
        for b in range(input_ids.shape[0]):
            ids, embeds = input_ids[b][valid[b]], text_embeds[b][valid[b]]
            sample_labels = labels[b][valid[b]] if labels is not None else torch.full_like(ids, IGNORE_INDEX)
            seq = splice_sample(ids, embeds, sample_labels, features)
            if limit is not None and len(seq[0]) > limit:
                length, seq = len(seq[0]), truncate_text(seq, limit)
                self._count_truncation(length, limit)
            sequences.append(seq)
        positions, new_mask, embeds, new_labels = pad_batch(sequences, attention_mask, input_ids.device)
        return None, positions, new_mask, past_key_values, embeds, (new_labels if labels is not None else None)

    def embed_text(self, input_ids, coordinate_values=None):
        """Embeddings of ids: the word embeddings', and a model with coordinate tokens' own for its bins and
        placeholders."""
        coordinates = self.get_model().coordinate_embedding()
        if coordinates is None:
            return self.get_input_embeddings()(input_ids)
        return coordinates.embed(input_ids, coordinate_values, self.get_input_embeddings())

    def _count_truncation(self, length: int, limit: int) -> None:
        model = self.get_model()
        if model.mm_truncated_sequences == 0:
            logger.warning(
                "a sequence of %d tokens was cut to the language model's %d positions (text only); "
                "further truncations are counted in mm_truncated_sequences",
                length,
                limit,
            )
        model.mm_truncated_sequences += 1

    # ----------------------------------------------------------------------- language-model calls
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        images=None,
        modalities=None,
        image_sizes=None,
        logits_to_keep=0,
        visual_stand_ins=None,
        pixel_values=None,
        token_type_ids=None,  # segment ids, as BERT-style processors give them: these models have none
        coordinate_values=None,
        variables=None,
        **kwargs,
    ):
        if pixel_values is not None:  # transformers' form, as an exported folder's processor gives it
            if images is not None:
                raise ValueError("pass the visual inputs once: images= or pixel_values=, not both")
            images, input_ids, attention_mask, labels = from_pixel_values(
                pixel_values, input_ids, attention_mask, labels, getattr(self.config, "image_token_index", None)
            )
        coordinates = self.get_model().coordinate_embedding()
        coordinate_values = batch_values(input_ids, coordinate_values, variables, self.config)
        targets = None
        if coordinates is not None and labels is not None:  # read before splicing moves the positions
            targets = coordinates.output_targets(labels, coordinate_values)
        if inputs_embeds is None and (images is not None or visual_stand_ins):
            input_ids, position_ids, attention_mask, cache, inputs_embeds, labels = (
                self.prepare_inputs_labels_for_multimodal(
                    input_ids,
                    position_ids,
                    attention_mask,
                    cache,
                    labels,
                    images,
                    modalities,
                    visual_stand_ins=visual_stand_ins or (),
                    coordinate_values=coordinate_values,
                )
            )
        elif inputs_embeds is None and coordinates is not None and input_ids is not None:
            inputs_embeds, input_ids = self.embed_text(input_ids, coordinate_values), None
        if position_ids is not None and not self._language_model_takes("position_ids"):
            position_ids = None  # MPT: ALiBi needs no positions
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if cache is not None:
            kwargs["cache"] = cache
        # In the signature so that generate's prefill asks for the last position's logits only (it checks the
        # signature); passed on where the family's forward takes it.
        if logits_to_keep and self._language_model_takes("logits_to_keep"):
            kwargs["logits_to_keep"] = logits_to_keep
        language_model = self._language_model_method("forward")
        if coordinates is None:
            output = language_model(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, labels=labels, **kwargs
            )
        else:  # words and bins are scored together: the bins' logits follow the words'
            with head_input(self.get_output_embeddings()) as seen:
                output = language_model(
                    input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
                )
            bins = coordinates.logits(seen["hidden"]).to(output.logits.dtype)
            output.logits = torch.cat([output.logits, bins], dim=-1)
            if labels is not None:
                output.loss = coordinates.loss(output.logits, labels, targets, kwargs.get("num_items_in_batch"))
        image_token = getattr(self.config, "image_token_index", None)
        if image_token is not None and getattr(output, "logits", None) is not None:
            output.logits = cover_image_token(output.logits, image_token)
        return output

    def _language_model_takes(self, argument: str) -> bool:
        return argument in _parameters(_next_definition(type(self), "forward"))

    @torch.no_grad()
    def generate(
        self,
        inputs=None,
        images=_NOT_GIVEN,
        modalities=None,
        image_sizes=None,
        coordinate_values=None,
        variables=None,
        **kwargs,
    ):
        """Generation, two ways.

        Called as LLaVA code calls it, with an `images` argument (visual inputs, or None for a text-only
        prompt), it runs from embeddings with the visual tokens spliced in and returns only the new
        tokens, as LLaVA's `generate` does. Called as transformers code calls it, without `images`, it is
        the language model's own `generate` and returns the prompt followed by the new tokens.
        """
        generate = self._language_model_method("generate")
        if inputs is None:
            inputs = kwargs.pop("input_ids", None)
        coordinate_values = batch_values(inputs, coordinate_values, variables, self.config)
        if images is _NOT_GIVEN and coordinate_values is None:
            return generate(inputs, **kwargs)
        images = None if images is _NOT_GIVEN else images
        if inputs is None:
            raise ValueError(
                "generate(images=...) needs the prompt's input ids (with one IMAGE_TOKEN_INDEX per visual input)"
            )
        if "inputs_embeds" in kwargs:
            raise ValueError("pass either images with input ids, or inputs_embeds, not both")
        kwargs.pop("position_ids", None)  # recomputed from the new attention mask
        attention_mask = kwargs.pop("attention_mask", None)
        _, _, attention_mask, _, inputs_embeds, _ = self.prepare_inputs_labels_for_multimodal(
            inputs,
            None,
            attention_mask,
            None,
            None,
            [] if images is None else images,
            modalities,
            coordinate_values=coordinate_values,
        )
        if inputs_embeds is None:  # no visual input: the prompt's own embeddings
            inputs_embeds = self.embed_text(inputs, coordinate_values)
        fit_new_tokens(self, inputs_embeds.shape[1], kwargs)
        with unmasked_generation_steps():  # the mask is passed; see there why transformers still warns
            return generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, inputs_embeds=None, images=None, modalities=None, **kwargs):
        inputs = self._language_model_method("prepare_inputs_for_generation")(
            input_ids, inputs_embeds=inputs_embeds, **kwargs
        )
        # Visual inputs belong to the prompt: only the first step (no cached tokens yet) splices them.
        cache = kwargs.get("cache")
        if images is not None and (cache is None or cache.get_seq_length() == 0):
            inputs["images"] = images
            inputs["modalities"] = modalities
        return inputs
