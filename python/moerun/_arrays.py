"""Python tensors as arguments of moerun._C, and new arrays of the caller's framework.

A framework is used only when the caller's tensors are its own: nothing here imports torch or CuPy
(they are looked up in sys.modules), and NumPy only for NumPy arrays.

torch tensors and NumPy arrays go to the native module as a (data_ptr, dtype, shape, device_type,
device_index) tuple after the same checks the native side makes for DLPack (contiguity, dtype):
torch's __dlpack__ costs microseconds per tensor, and NumPy cannot export bfloat16 or float8
through DLPack. Every other object goes as itself, through DLPack.
"""

import sys

from . import _C

_CPU, _CUDA = 1, 2  # DLPack device types

_DTYPE_NAMES = {
    _C.DTYPE_F32: "float32",
    _C.DTYPE_BF16: "bfloat16",
    _C.DTYPE_FP8_E4M3: "float8_e4m3fn",
    _C.DTYPE_I32: "int32",
}
_EXPECTED_DTYPES = "float32, bfloat16, float8_e4m3fn or int32"


def invalid(field, expected, actual):
    """The error the native side raises, raised from Python: the field, expected, actual."""
    return _C.InvalidArgument(f"moerun: invalid {field}: expected {expected}, got {actual}")


# --- torch ---------------------------------------------------------------------------------------

_torch_codes = None
_torch_dtypes = None  # the inverse: moerun dtype code -> torch dtype


def _torch_dtype_codes(torch):
    global _torch_codes, _torch_dtypes
    if _torch_codes is None:
        _torch_codes = {
            torch.float32: _C.DTYPE_F32,
            torch.bfloat16: _C.DTYPE_BF16,
            torch.float8_e4m3fn: _C.DTYPE_FP8_E4M3,
            torch.int32: _C.DTYPE_I32,
        }
        _torch_dtypes = {code: dtype for dtype, code in _torch_codes.items()}
    return _torch_codes


def _torch_arg(x, name):
    code = _torch_dtype_codes(sys.modules["torch"]).get(x.dtype)
    if code is None:
        raise invalid(f"{name} dtype", _EXPECTED_DTYPES, str(x.dtype).replace("torch.", ""))
    if not x.is_contiguous():
        raise invalid(f"{name} layout", "contiguous (row-major)", "strided")
    device = x.device
    if device.type == "cuda":
        return (x.data_ptr(), code, x.shape, _CUDA, device.index)
    if device.type == "cpu":
        return (x.data_ptr(), code, x.shape, _CPU, 0)
    raise invalid(f"{name} device", "cpu or cuda", device.type)


# --- NumPy ---------------------------------------------------------------------------------------

_numpy_codes = None


def _numpy_dtype_codes():
    global _numpy_codes
    if _numpy_codes is None:
        import numpy as np

        codes = {np.dtype(np.float32): _C.DTYPE_F32, np.dtype(np.int32): _C.DTYPE_I32}
        try:
            import ml_dtypes

            codes[np.dtype(ml_dtypes.bfloat16)] = _C.DTYPE_BF16
            codes[np.dtype(ml_dtypes.float8_e4m3fn)] = _C.DTYPE_FP8_E4M3
        except ImportError:  # bf16 / fp8 host arrays then come from another framework
            pass
        _numpy_codes = codes
    return _numpy_codes


def _numpy_arg(x, name):
    code = _numpy_dtype_codes().get(x.dtype)
    if code is None:
        raise invalid(f"{name} dtype", _EXPECTED_DTYPES, str(x.dtype))
    if not x.flags.c_contiguous:
        raise invalid(f"{name} layout", "contiguous (row-major)", "strided")
    return (x.ctypes.data, code, x.shape, _CPU, 0)


def _is_torch(x):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_numpy(x):
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


def arg(x, name):
    """`x` as the native module takes it (None stays None)."""
    if x is None:
        return None
    if _is_torch(x):
        return _torch_arg(x, name)
    if _is_numpy(x):
        return _numpy_arg(x, name)
    return x  # any other DLPack producer


def bytes_arg(x, name):
    """A buffer of any dtype as raw bytes (a workspace): its pointer and byte size."""
    if _is_torch(x):
        if not x.is_contiguous():
            raise invalid(f"{name} layout", "contiguous (row-major)", "strided")
        device = x.device
        kind, index = (_CUDA, device.index) if device.type == "cuda" else (_CPU, 0)
        return (x.data_ptr(), _C.DTYPE_FP8_E4M3, (x.numel() * x.element_size(),), kind, index)
    if _is_numpy(x):
        return (x.ctypes.data, _C.DTYPE_FP8_E4M3, (x.nbytes,), _CPU, 0)
    if hasattr(x, "data") and hasattr(x.data, "ptr"):  # CuPy
        return (x.data.ptr, _C.DTYPE_FP8_E4M3, (x.nbytes,), _CUDA, x.device.id)
    raise invalid(name, "a torch tensor, NumPy or CuPy array", type(x).__name__)


# --- new arrays and streams ----------------------------------------------------------------------


def empty_like_framework(like, shape, dtype_code):
    """An uninitialized array of `like`'s framework and device."""
    if _is_torch(like):
        torch = sys.modules["torch"]
        _torch_dtype_codes(torch)
        return torch.empty(shape, dtype=_torch_dtypes[dtype_code], device=like.device)
    if _is_numpy(like):
        import numpy as np

        dtype = {v: k for k, v in _numpy_dtype_codes().items()}.get(dtype_code)
        if dtype is None:
            raise invalid("out", f"an array of {_DTYPE_NAMES[dtype_code]} (needs ml_dtypes)", "none")
        return np.empty(shape, dtype=dtype)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(like, cupy.ndarray):
        with cupy.cuda.Device(like.device.id):
            if dtype_code == _C.DTYPE_F32:
                return cupy.empty(shape, dtype=cupy.float32)
        raise invalid("out", "given for CuPy inputs (CuPy has no bfloat16 dtype)", "none")
    raise invalid("out", "given for inputs of this framework", type(like).__name__)


def empty_bytes_like(like, nbytes):
    """An uninitialized byte buffer on `like`'s device, from its framework's allocator."""
    if _is_torch(like):
        torch = sys.modules["torch"]
        return torch.empty((nbytes,), dtype=torch.uint8, device=like.device)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(like, cupy.ndarray):
        with cupy.cuda.Device(like.device.id):
            return cupy.empty((nbytes,), dtype=cupy.uint8)
    raise invalid("workspace", "given for CUDA inputs of this framework", type(like).__name__)


def current_stream(like):
    """The caller's current CUDA stream for `like`'s device (0 for host arrays)."""
    if _is_torch(like):
        device = like.device
        if device.type != "cuda":
            return 0
        torch = sys.modules["torch"]
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # what Triton calls
        if raw is not None:
            return raw(device.index)
        return torch.cuda.current_stream(device).cuda_stream
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(like, cupy.ndarray):
        return cupy.cuda.get_current_stream().ptr
    return 0


def stream_handle(stream):
    """A cudaStream_t as an int from a torch or CuPy stream object, or an int."""
    for attribute in ("cuda_stream", "ptr"):
        value = getattr(stream, attribute, None)
        if value is not None:
            return int(value)
    return int(stream)
