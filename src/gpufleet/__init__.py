"""gpufleet: declarative placement and provisioning for multi-model vLLM fleets on MI300X hosts."""

__version__ = "0.1.0"
