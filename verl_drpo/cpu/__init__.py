"""Optional CPU support for running verl's own trainer end to end on a machine without an accelerator.

Loaded by the ``verl_drpo_cpu`` entry point on every ``import verl``; it must stay cheap and harmless on GPU
machines (nothing here takes effect unless ``VERL_PLATFORM=cpu``).
"""
