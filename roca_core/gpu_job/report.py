"""``summary.md`` of a GPU job: environment, benchmark table, the issue's speed goals,
training, and the held-out comparison with the demo model."""
from __future__ import annotations

from typing import Any

# Issue #14: paper preset <= 10 ms per 360x480 image (bf16, batch 1; ROCA reports 53 ms on an
# RTX 3090, so this is also >= 5x); small preset >= 500 images/s at batch 8.
PAPER_MS_GOAL = 10.0
SMALL_IPS_GOAL = 500.0


def speed_goals(rows: list[dict]) -> list[dict[str, Any]]:
    """The two goals, each with the measured value (None when not measured) and whether met."""
    def find(preset: str, amp: "str | None", batch: int) -> list[dict]:
        return [r for r in rows if r.get("section") == "forward" and r.get("preset") == preset
                and r.get("batch") == batch and (amp is None or r.get("amp") == amp) and "ms" in r]
    paper = find("paper", "bf16", 1)
    small = find("small", None, 8)
    paper_ms = paper[0]["ms"] if paper else None
    best = max(small, key=lambda r: r["images_per_s"]) if small else None
    return [
        {"goal": f"paper preset, bf16, batch 1: <= {PAPER_MS_GOAL:g} ms per image", "value": paper_ms,
         "unit": "ms", "met": None if paper_ms is None else paper_ms <= PAPER_MS_GOAL},
        {"goal": f"small preset, batch 8: >= {SMALL_IPS_GOAL:g} images/s",
         "value": best["images_per_s"] if best else None, "unit": f"images/s ({best['amp']})" if best else "",
         "met": None if best is None else best["images_per_s"] >= SMALL_IPS_GOAL},
    ]


def markdown_table(rows: list[dict]) -> str:
    """One Markdown table of all rows (stage breakdown and notes in the last column)."""
    head = "| section | preset | input | amp | batch | ms / batch | images/s | peak GPU MB | notes |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r.get('section')} | {r.get('preset')} | | {r.get('amp', '')} | "
                         f"{r.get('batch', '')} | | | | error: {r['error'][:120]} |")
            continue
        notes = []
        if "stages_ms" in r:
            notes.append(", ".join(f"{k} {v:.1f}" for k, v in r["stages_ms"].items()) + " ms")
        if "forward_ms" in r:
            notes.append(f"forward+losses {r['forward_ms']:.1f} ms")
        if "dets_per_image" in r:
            notes.append(f"{r['dets_per_image']} dets/image")
        if r.get("note"):
            notes.append(f"{r['note']}, {r.get('retrieved', 0)} retrieved")
        mem = "" if r.get("peak_mem_mb") is None else f"{r['peak_mem_mb']:.0f}"
        lines.append(f"| {r['section']} | {r['preset']} | {r['input']} | {r['amp']} | {r['batch']} | "
                     f"{r['ms']:.2f} | {r['images_per_s']:.1f} | {mem} | {'; '.join(notes)} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_markdown(s: dict[str, Any]) -> str:
    env = s.get("environment", {})
    lines = [f"# roca GPU job ({s.get('profile')})", ""]
    if s.get("profile") == "dry_run":
        lines += ["CPU dry run with tiny sizes: it checks that the job works; its numbers are not "
                  "measurements of the goals.", ""]
    lines += [f"- device: {env.get('gpu', 'CPU')}; torch {env.get('torch')}, torchvision "
              f"{env.get('torchvision')}, CUDA {env.get('torch_cuda')}, python {env.get('python')}, "
              f"{env.get('cpu_cores')} cores",
              f"- voxeliser: {s.get('train_voxeliser') or env.get('voxeliser')} (trained preset); "
              f"retrieval index: {env.get('retrieval_index')}; "
              f"EGL: {env.get('egl_renderer')}",
              f"- code: {s.get('git')}; total {_fmt(s.get('total_s'))} s; phases (s): {s.get('phases_s')}",
              f"- reproduce: `{s.get('repro')}`", ""]
    if s.get("failures"):
        lines += ["**Failures:** " + "; ".join(s["failures"]), ""]
    rows = s.get("bench_rows") or []
    if rows:
        lines += ["## Benchmark", "", markdown_table(rows), "### Goals (issue #14)", "",
                  "| goal | measured | met |", "|---|---|---|"]
        for g in speed_goals(rows):
            met = "-" if g["met"] is None else ("yes" if g["met"] else "no")
            lines.append(f"| {g['goal']} | {_fmt(g['value'], 2)} {g['unit']} | {met} |")
        lines.append("")
    if "render" in s:
        r = s["render"]
        sp = r["splits"]
        counts = ", ".join(f"{v['images']} {k} images ({v['annotations']} objects)" for k, v in sp.items())
        lines += ["## Data", "", f"{counts} rendered in {_fmt(r['seconds'])} s "
                  f"({_fmt(r['images_per_second'])} images/s, {r['workers']} workers, "
                  f"{r['cad_models_used']} CAD models); the val split (the last rooms) is held out.", ""]
    if "train_plan" in s:
        p, t = s["train_plan"], s.get("train", {})
        lines += ["## Training", ""]
        if s.get("train_batch"):
            b = s["train_batch"]
            timed = ", ".join(f"{k}: {_fmt(v)}" for k, v in b.get("candidates", {}).items()) or "none"
            lines += [f"- batch: {b['batch']} images per step at lr {b['base_lr']:.4g} (chosen by "
                      f"{b['chosen_by']}; benchmarked images/s by batch: {timed})"]
        lines += [
                  f"- plan: {p['iterations']} iterations in {p['seconds']} s (benchmarked step "
                  f"{p['benchmarked_step_s']} s x margin = {p['planned_step_s']} s), the preset's "
                  f"{p['preset_iterations']}-iteration schedule x {p['schedule_scale']}: warm-up "
                  f"{p['warmup_iters']}, lr steps {p['lr_steps']}",
                  f"- done: iteration {t.get('final_iteration')} of {t.get('planned_iterations')} in "
                  f"{t.get('seconds')} s (exit code {t.get('exit_code')}); {_fmt(t.get('mean_step_time_s'), 4)} "
                  f"s/step + {_fmt(t.get('mean_data_time_s'), 4)} s data wait; model {t.get('model')}",
                  "- last losses: " + ", ".join(f"{k} {v:.3f}" for k, v in (t.get("last_losses") or {}).items())]
        if t.get("unfinished"):
            u = t["unfinished"]
            lines += [f"- **unfinished**: stopped before the learning-rate step(s) {u['lr_steps_not_reached']}; "
                      f"finish on the same machine with `{u['resume']}`"]
        if s.get("graft"):
            g = s["graft"]
            lines += [f"- heads put back from `{g['heads_from']}`: {', '.join(g['modules'])} -> {g['model']} "
                      "(the model evaluated and shipped)"]
        lines += [""]
    ev = s.get("eval") or {}
    if ev:
        names = list(ev)
        lines += ["## Held-out evaluation (roca-eval, val split)", "",
                  "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for key in ("alignment_class_mean", "alignment_instance_mean", "retrieval_aware_class_mean",
                    "box_ap50", "mask_ap50", "depth_abs_rel", "num_images", "seconds_per_image"):
            digits = 3 if key in ("depth_abs_rel", "seconds_per_image") else 1
            lines.append(f"| {key} | " + " | ".join(_fmt(ev[n].get(key), digits) for n in names) + " |")
        if s.get("beats_demo") is not None:
            lines += ["", f"The trained model {'beats' if s['beats_demo'] else 'does not beat'} the demo "
                      "model on the held-out rooms (class-mean alignment, then box AP50)."]
        lines.append("")
    if s.get("model_manifest"):
        lines += ["## Model", "", f"`{s['model_manifest']}`; join the parts with "
                  f"`python -m roca_core.gpu_job.file_split join {s['model_manifest']}`", ""]
    return "\n".join(lines)
