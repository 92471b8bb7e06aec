"""The model itself: the multimodal core, its visual modules and the seven language-model families.

This folder is flat and self-contained on purpose: its modules import only each other (one-dot relative
imports), the standard library, torch, transformers, safetensors, numpy and PIL, so that an exported
checkpoint can carry them verbatim as Hugging Face custom code (`trust_remote_code`), loadable where this
package is not installed. Nothing here registers anything with transformers: `llava.model` does that.

Importing this package loads nothing: `llava.constants` re-exports `constants` from here and must stay light.
"""
