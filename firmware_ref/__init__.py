"""grukit.firmware_ref: the C kernel (its sources live beside this file) and its Python side.

- ``c_export``: writes a quantized model as C constants for the kernel, after deciding the kernel's own
  integer parameters and proving its accumulators stay in range (the kernel's Prepare).
- ``build``: compilers, strict flags, QEMU's Cortex-M machines; ``golden``: test vectors for the C drivers.
- ``host``: the kernel built for the host and run over real data from Python (``run_c_host``).
- ``measure``: instructions per step on emulated Cortex-M cores, flash bytes of a Cortex-M4 build.
"""
