"""Headless OpenGL (moderngl on EGL) renderer of synthetic rooms: RGB, depth, instance ids, NOCs.

One draw pass writes three targets: shaded colour (RGBA8), ``(noc_x, noc_y, noc_z, instance)``
(RGBA32F) and linear camera depth (R32F), so masks, depth and NOCs agree pixel for pixel.
Geometry is given directly in the OpenCV camera frame (x right, y down, z forward) and the
projection maps pixel centres exactly as the intrinsics say (pixel u covers [u - 0.5, u + 0.5]).
Mesa's llvmpipe makes this work on CPU-only machines; each process needs its own context.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

VERTEX_SHADER = """
#version 330
uniform mat4 u_model_cam;   // model coordinates -> camera (OpenCV)
uniform mat3 u_normal_cam;  // inverse transpose of the linear part
uniform mat4 u_proj;
uniform vec3 u_tex_scale;   // model coords -> metric texture coords
in vec3 in_pos;
in vec3 in_normal;
out vec3 v_noc;
out vec3 v_normal;
out vec3 v_tex;
out float v_z;
void main() {
    vec4 p = u_model_cam * vec4(in_pos, 1.0);
    gl_Position = u_proj * p;
    v_noc = in_pos;
    v_normal = u_normal_cam * in_normal;
    v_tex = in_pos * u_tex_scale;
    v_z = p.z;
}
"""

FRAGMENT_SHADER = """
#version 330
uniform vec3 u_color;
uniform vec3 u_color2;
uniform int u_tex_kind;     // 0 plain, 1 planks, 2 tiles, 3 noise (carpet/plaster), 4 stripes
uniform float u_tex_freq;
uniform float u_instance;   // 0 for the room
uniform vec3 u_light_dir;   // towards the light, camera frame
uniform float u_ambient;
uniform float u_diffuse;
in vec3 v_noc;
in vec3 v_normal;
in vec3 v_tex;
in float v_z;
layout(location = 0) out vec4 out_color;
layout(location = 1) out vec4 out_noc_inst;
layout(location = 2) out float out_depth;

float hash(vec3 p) { return fract(sin(dot(p, vec3(12.9898, 78.233, 37.719))) * 43758.5453); }
float vnoise(vec3 p) {
    vec3 i = floor(p); vec3 f = fract(p); f = f * f * (3.0 - 2.0 * f);
    float n000 = hash(i), n100 = hash(i + vec3(1,0,0)), n010 = hash(i + vec3(0,1,0)), n110 = hash(i + vec3(1,1,0));
    float n001 = hash(i + vec3(0,0,1)), n101 = hash(i + vec3(1,0,1)), n011 = hash(i + vec3(0,1,1)), n111 = hash(i + vec3(1,1,1));
    return mix(mix(mix(n000, n100, f.x), mix(n010, n110, f.x), f.y), mix(mix(n001, n101, f.x), mix(n011, n111, f.x), f.y), f.z);
}
void main() {
    vec3 n = normalize(v_normal);
    vec3 t = v_tex * u_tex_freq;
    vec3 albedo = u_color;
    if (u_tex_kind == 1) {          // planks along x
        float row = floor(t.z * 4.0);
        float grain = vnoise(vec3(t.x * 0.7 + row * 3.1, t.z * 40.0, row));
        float seam = step(0.95, fract(t.z * 4.0));
        albedo = mix(u_color, u_color2, 0.35 * grain + 0.25 * hash(vec3(row, 1.0, 2.0))) * (1.0 - 0.5 * seam);
    } else if (u_tex_kind == 2) {   // square tiles with grout
        vec3 f = fract(t * 2.0);
        float grout = max(step(0.94, f.x), max(step(0.94, f.y), step(0.94, f.z)));
        float checker = mod(floor(t.x * 2.0) + floor(t.y * 2.0) + floor(t.z * 2.0), 2.0);
        albedo = mix(mix(u_color, u_color2, 0.25 * checker), vec3(0.75), grout);
    } else if (u_tex_kind == 3) {   // noise
        float v = 0.6 * vnoise(t * 8.0) + 0.4 * vnoise(t * 31.0);
        albedo = mix(u_color, u_color2, v);
    } else if (u_tex_kind == 4) {   // vertical stripes (wallpaper)
        float s = step(0.5, fract((t.x + t.z) * 3.0));
        albedo = mix(u_color, u_color2, 0.5 * s);
    } else {
        albedo = u_color * (0.95 + 0.1 * vnoise(t * 12.0));
    }
    float diffuse = abs(dot(n, normalize(u_light_dir)));   // two-sided: CAD normals may flip
    // a little view-dependent falloff so distant surfaces are darker, like indoor light
    float falloff = 1.0 / (1.0 + 0.04 * v_z * v_z);
    vec3 c = albedo * (u_ambient + u_diffuse * diffuse) * (0.75 + 0.25 * falloff);
    out_color = vec4(c, 1.0);
    out_noc_inst = vec4(u_instance > 0.5 ? v_noc : vec3(0.0), u_instance);
    out_depth = v_z;
}
"""


def projection_from_intrinsics(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """Clip matrix for OpenCV-frame points; image row 0 ends up in framebuffer row 0 (no flip)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    a = (far + near) / (far - near)
    b = -2.0 * far * near / (far - near)
    return np.array([
        [2 * fx / width, 0.0, 2 * (cx + 0.5) / width - 1.0, 0.0],
        [0.0, 2 * fy / height, 2 * (cy + 0.5) / height - 1.0, 0.0],
        [0.0, 0.0, a, b],
        [0.0, 0.0, 1.0, 0.0],
    ])


def flat_shaded_arrays(mesh: trimesh.Trimesh) -> np.ndarray:
    """(F*3, 6) float32 interleaved position + face normal (faceted look, no smoothing)."""
    tri = np.asarray(mesh.triangles, dtype=np.float32).reshape(-1, 3)
    normals = np.repeat(np.asarray(mesh.face_normals, dtype=np.float32), 3, axis=0)
    return np.ascontiguousarray(np.concatenate([tri, normals], axis=1))


@dataclass
class DrawItem:
    """One mesh instance to draw.

    ``model_to_cam``: (4, 4) transform of the mesh's coordinates into the camera frame.
    ``tex_scale``: multiplies mesh coordinates into metres for textures (the pose scale ``s``
    for CAD models, 1 for room parts). ``instance`` 0 is the room (no NOCs, no mask).
    """

    mesh_key: str
    model_to_cam: np.ndarray
    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tex_kind: int = 0
    tex_freq: float = 1.0
    tex_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    instance: int = 0


@dataclass
class RenderOutput:
    rgb: np.ndarray        # (H, W, 3) float32 in [0, 1], before sensor noise
    depth: np.ndarray      # (H, W) float32 metres, 0 where nothing was drawn
    instance: np.ndarray   # (H, W) int32, 0 = room / background
    noc: np.ndarray        # (H, W, 3) float32 canonical coordinates of objects, 0 elsewhere


class RendererUnavailable(RuntimeError):
    """No headless OpenGL (EGL) context could be created."""


class SceneRenderer:
    """Owns a GL context, the uploaded meshes and an offscreen framebuffer of fixed size."""

    def __init__(self, width: int, height: int):
        import moderngl

        try:
            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as exc:
            raise RendererUnavailable(
                "cannot create a headless OpenGL context with EGL (moderngl). Install Mesa's EGL "
                "(Debian/Ubuntu: libegl1 libgl1-mesa-dri) or run on a machine with a GPU driver. "
                f"Cause: {exc}") from exc
        self.width, self.height = int(width), int(height)
        self.prog = self.ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
        size = (self.width, self.height)
        self._color = self.ctx.renderbuffer(size, 4)
        self._noc = self.ctx.renderbuffer(size, 4, dtype="f4")
        self._depth_lin = self.ctx.renderbuffer(size, 1, dtype="f4")
        self._zbuf = self.ctx.depth_renderbuffer(size)
        self.fbo = self.ctx.framebuffer([self._color, self._noc, self._depth_lin], self._zbuf)
        self._vaos: dict[str, object] = {}

    def has_mesh(self, key: str) -> bool:
        return key in self._vaos

    def add_mesh(self, key: str, mesh: trimesh.Trimesh) -> None:
        """Upload a mesh once; draw it any number of times by ``key``."""
        data = flat_shaded_arrays(mesh)
        vbo = self.ctx.buffer(data.tobytes())
        self._vaos[key] = self.ctx.vertex_array(self.prog, [(vbo, "3f 3f", "in_pos", "in_normal")])

    def render(self, items: list[DrawItem], K: np.ndarray, near: float, far: float,
               light_dir_cam: np.ndarray, ambient: float, diffuse: float) -> RenderOutput:
        import moderngl

        ctx = self.ctx
        self.fbo.use()
        ctx.viewport = (0, 0, self.width, self.height)
        ctx.enable(moderngl.DEPTH_TEST)
        ctx.disable(moderngl.CULL_FACE)
        # Zero clears every attachment: no NOC, instance 0, depth 0 where nothing is drawn.
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        prog = self.prog
        prog["u_proj"].write(projection_from_intrinsics(K, self.width, self.height, near, far).T.astype("f4").tobytes())
        prog["u_light_dir"].value = tuple(float(x) for x in light_dir_cam)
        prog["u_ambient"].value = float(ambient)
        prog["u_diffuse"].value = float(diffuse)
        for it in items:
            m = np.asarray(it.model_to_cam, dtype=np.float64)
            lin = m[:3, :3]
            normal_mat = np.linalg.inv(lin).T
            prog["u_model_cam"].write(m.T.astype("f4").tobytes())
            prog["u_normal_cam"].write(normal_mat.T.astype("f4").tobytes())
            prog["u_tex_scale"].value = tuple(float(x) for x in it.tex_scale)
            prog["u_color"].value = tuple(float(x) for x in it.color)
            prog["u_color2"].value = tuple(float(x) for x in it.color2)
            prog["u_tex_kind"].value = int(it.tex_kind)
            prog["u_tex_freq"].value = float(it.tex_freq)
            prog["u_instance"].value = float(it.instance)
            self._vaos[it.mesh_key].render(moderngl.TRIANGLES)
        h, w = self.height, self.width
        rgb = np.frombuffer(self.fbo.read(components=3, attachment=0), dtype=np.uint8).reshape(h, w, 3)
        noc_inst = np.frombuffer(self.fbo.read(components=4, attachment=1, dtype="f4"), dtype=np.float32).reshape(h, w, 4)
        depth = np.frombuffer(self.fbo.read(components=1, attachment=2, dtype="f4"), dtype=np.float32).reshape(h, w)
        return RenderOutput(rgb=rgb.astype(np.float32) / 255.0, depth=depth.copy(),
                            instance=np.rint(noc_inst[..., 3]).astype(np.int32), noc=noc_inst[..., :3].copy())

    def release(self) -> None:
        for vao in self._vaos.values():
            vao.release()
        self.fbo.release()
        self.ctx.release()
