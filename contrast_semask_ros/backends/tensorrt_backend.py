"""TensorRT backend: a serialized engine run with the TensorRT 10 name-based I/O API.

Device buffers, pinned host buffers and the stream come from pycuda. The pycuda pitfalls that
other ROS inference nodes hit are handled here: no `pycuda.autoinit` (it binds a context to the
importing thread); one context is created from the primary context and pushed in whichever
thread calls `infer`, then popped, so ROS executor threads work; everything is freed in
`close()` with the context current. Imports tensorrt and pycuda only when constructed.
"""

from __future__ import annotations

import os

import numpy as np

from contrast_semask_ros.engine_spec import read_spec

from .base import Backend, BackendError

INSTALL_HINT = ('the TensorRT backend needs `tensorrt` (JetPack, or NVIDIA\'s pip package) and '
                '`pycuda` (pip install pycuda); without a GPU use the .onnx model')


class TensorRTBackend(Backend):
    name = 'tensorrt'

    def __init__(self, engine_path: str | os.PathLike, device: int = 0) -> None:
        super().__init__(read_spec(engine_path))
        try:
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as err:
            raise BackendError(INSTALL_HINT) from err
        self.cuda, self.trt = cuda, trt
        cuda.init()
        gpu = cuda.Device(device)
        major, minor = gpu.compute_capability()
        here = (trt.__version__, gpu.name(), f'{major}.{minor}')
        built = (self.spec.tensorrt_version, self.spec.gpu_name, self.spec.compute_capability)
        if here != built:
            raise BackendError(
                f'{engine_path} was built with TensorRT {built[0]} for {built[1]} (sm {built[2]})'
                f' but this is TensorRT {here[0]} on {here[1]} (sm {here[2]}): engines do not '
                'move between GPUs or TensorRT versions; rebuild it here with '
                '`contrast-semask-export trt model.onnx --out model.engine`')
        self.context = gpu.retain_primary_context()
        self.context.push()
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            with open(engine_path, 'rb') as f:
                self.engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
            if self.engine is None:
                raise BackendError(f'TensorRT could not deserialize {engine_path}')
            self.execution = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            self.host: dict[str, np.ndarray] = {}
            self.device_buffers: dict[str, object] = {}
            for tensor in (*self.spec.inputs, *self.spec.outputs):
                if tuple(self.engine.get_tensor_shape(tensor.name)) != tensor.shape:
                    raise BackendError(f'engine tensor {tensor.name!r} has shape '
                                       f'{tuple(self.engine.get_tensor_shape(tensor.name))}, '
                                       f'its spec says {tensor.shape}; rebuild both together')
                host = cuda.pagelocked_empty(tensor.shape, np.dtype(tensor.dtype))
                buffer = cuda.mem_alloc(host.nbytes)
                self.host[tensor.name], self.device_buffers[tensor.name] = host, buffer
                self.execution.set_tensor_address(tensor.name, int(buffer))
        finally:
            self.context.pop()

    def _run(self, feeds: dict[str, np.ndarray], embedding_out: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cuda = self.cuda
        self.context.push()  # whichever thread calls infer gets the context
        try:
            for tensor in self.spec.inputs:
                np.copyto(self.host[tensor.name], feeds[tensor.name])
                cuda.memcpy_htod_async(self.device_buffers[tensor.name], self.host[tensor.name],
                                       self.stream)
            if not self.execution.execute_async_v3(self.stream.handle):
                raise BackendError('TensorRT execute_async_v3 failed')
            names = [t.name for t in self.spec.required_outputs]
            # the embedding straight into the caller's array (pageable: a synchronous copy)
            hosts = [self.host[name] for name in names]
            if embedding_out is not None:
                hosts[0] = embedding_out[None]
            for name, host in zip(names, hosts, strict=True):
                cuda.memcpy_dtoh_async(host, self.device_buffers[name], self.stream)
            self.stream.synchronize()
        finally:
            self.context.pop()
        # the pinned host buffers are reused by the next call (documented in base.py)
        embedding, cost, confidence = hosts
        return embedding, cost, confidence

    def close(self) -> None:
        if getattr(self, 'context', None) is None:
            return
        self.context.push()
        try:
            for buffer in self.device_buffers.values():
                buffer.free()
            self.device_buffers.clear()
            self.execution = self.engine = None
        finally:
            self.context.pop()
            self.context.detach()
            self.context = None
