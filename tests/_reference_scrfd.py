"""Test oracle: a straight re-implementation of the official insightface SCRFD ONNX wrapper
(``SCRFD.prepare/forward/detect/nms``, reference spec §7.2), written the way the original is
written (numpy, per-level loop, ``cv2.dnn.blobFromImage``), with no code shared with damofd.

Only used to check :mod:`damofd.inference` against the behaviour users of the official tool see.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime


def distance2bbox(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    x1 = points[:, 0] - distance[:, 0]
    y1 = points[:, 1] - distance[:, 1]
    x2 = points[:, 0] + distance[:, 2]
    y2 = points[:, 1] + distance[:, 3]
    return np.stack([x1, y1, x2, y2], axis=-1)


def distance2kps(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    preds = []
    for i in range(0, distance.shape[1], 2):
        px = points[:, i % 2] + distance[:, i]
        py = points[:, i % 2 + 1] + distance[:, i + 1]
        preds.append(px)
        preds.append(py)
    return np.stack(preds, axis=-1)


class ReferenceSCRFD:
    def __init__(self, model_file: str, nms_thresh: float = 0.4, det_thresh: float = 0.5) -> None:
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = 2
        self.session = onnxruntime.InferenceSession(
            model_file, sess_options=so, providers=["CPUExecutionProvider"]
        )
        self.center_cache: dict[tuple[int, int, int], np.ndarray] = {}
        self.nms_thresh = nms_thresh
        self.det_thresh = det_thresh
        self._init_vars()

    def _init_vars(self) -> None:
        input_cfg = self.session.get_inputs()[0]
        input_shape = input_cfg.shape
        if isinstance(input_shape[2], str):
            self.input_size = None
        else:
            self.input_size = tuple(input_shape[2:4][::-1])
        self.input_name = input_cfg.name
        outputs = self.session.get_outputs()
        self.batched = len(outputs[0].shape) == 3
        self.output_names = [o.name for o in outputs]
        self.input_mean = 127.5
        self.input_std = 128.0
        self.use_kps = False
        self._num_anchors = 1
        if len(outputs) == 6:
            self.fmc = 3
            self._feat_stride_fpn = [8, 16, 32]
            self._num_anchors = 2
        elif len(outputs) == 9:
            self.fmc = 3
            self._feat_stride_fpn = [8, 16, 32]
            self._num_anchors = 2
            self.use_kps = True
        elif len(outputs) == 10:
            self.fmc = 5
            self._feat_stride_fpn = [8, 16, 32, 64, 128]
            self._num_anchors = 1
        elif len(outputs) == 15:
            self.fmc = 5
            self._feat_stride_fpn = [8, 16, 32, 64, 128]
            self._num_anchors = 1
            self.use_kps = True

    def forward(self, img: np.ndarray, threshold: float):
        scores_list = []
        bboxes_list = []
        kpss_list = []
        input_size = tuple(img.shape[0:2][::-1])
        blob = cv2.dnn.blobFromImage(
            img,
            1.0 / self.input_std,
            input_size,
            (self.input_mean, self.input_mean, self.input_mean),
            swapRB=True,
        )
        net_outs = self.session.run(self.output_names, {self.input_name: blob})
        input_height = blob.shape[2]
        input_width = blob.shape[3]
        fmc = self.fmc
        for idx, stride in enumerate(self._feat_stride_fpn):
            if self.batched:
                scores = net_outs[idx][0]
                bbox_preds = net_outs[idx + fmc][0] * stride
                if self.use_kps:
                    kps_preds = net_outs[idx + fmc * 2][0] * stride
            else:
                scores = net_outs[idx]
                bbox_preds = net_outs[idx + fmc] * stride
                if self.use_kps:
                    kps_preds = net_outs[idx + fmc * 2] * stride
            height = input_height // stride
            width = input_width // stride
            key = (height, width, stride)
            if key in self.center_cache:
                anchor_centers = self.center_cache[key]
            else:
                anchor_centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(
                    np.float32
                )
                anchor_centers = (anchor_centers * stride).reshape((-1, 2))
                if self._num_anchors > 1:
                    anchor_centers = np.stack([anchor_centers] * self._num_anchors, axis=1).reshape(
                        (-1, 2)
                    )
                if len(self.center_cache) < 100:
                    self.center_cache[key] = anchor_centers
            pos_inds = np.where(scores >= threshold)[0]
            bboxes = distance2bbox(anchor_centers, bbox_preds)
            scores_list.append(scores[pos_inds])
            bboxes_list.append(bboxes[pos_inds])
            if self.use_kps:
                kpss = distance2kps(anchor_centers, kps_preds)
                kpss = kpss.reshape((kpss.shape[0], -1, 2))
                kpss_list.append(kpss[pos_inds])
        return scores_list, bboxes_list, kpss_list

    def detect(
        self,
        img: np.ndarray,
        input_size: tuple[int, int] | None = None,
        max_num: int = 0,
        metric: str = "default",
    ):
        """``input_size`` is (W, H); returns ``det`` (N, 5) and ``kpss`` (N, 5, 2) or None."""
        assert input_size is not None or self.input_size is not None
        input_size = self.input_size if input_size is None else input_size
        im_ratio = float(img.shape[0]) / img.shape[1]
        model_ratio = float(input_size[1]) / input_size[0]
        if im_ratio > model_ratio:
            new_height = input_size[1]
            new_width = int(new_height / im_ratio)
        else:
            new_width = input_size[0]
            new_height = int(new_width * im_ratio)
        det_scale = float(new_height) / img.shape[0]
        resized_img = cv2.resize(img, (new_width, new_height))
        det_img = np.zeros((input_size[1], input_size[0], 3), dtype=np.uint8)
        det_img[:new_height, :new_width, :] = resized_img

        scores_list, bboxes_list, kpss_list = self.forward(det_img, self.det_thresh)

        scores = np.vstack(scores_list)
        scores_ravel = scores.ravel()
        order = scores_ravel.argsort()[::-1]
        bboxes = np.vstack(bboxes_list) / det_scale
        if self.use_kps:
            kpss = np.vstack(kpss_list) / det_scale
        pre_det = np.hstack((bboxes, scores)).astype(np.float32, copy=False)
        pre_det = pre_det[order, :]
        keep = self.nms(pre_det)
        det = pre_det[keep, :]
        if self.use_kps:
            kpss = kpss[order, :, :]
            kpss = kpss[keep, :, :]
        else:
            kpss = None
        if max_num > 0 and det.shape[0] > max_num:
            area = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
            img_center = img.shape[0] // 2, img.shape[1] // 2
            offsets = np.vstack(
                [
                    (det[:, 0] + det[:, 2]) / 2 - img_center[1],
                    (det[:, 1] + det[:, 3]) / 2 - img_center[0],
                ]
            )
            offset_dist_squared = np.sum(np.power(offsets, 2.0), 0)
            if metric == "max":
                values = area
            else:
                values = area - offset_dist_squared * 2.0
            bindex = np.argsort(values)[::-1]
            bindex = bindex[0:max_num]
            det = det[bindex, :]
            if kpss is not None:
                kpss = kpss[bindex, :]
        return det, kpss

    def nms(self, dets: np.ndarray) -> list[int]:
        thresh = self.nms_thresh
        x1 = dets[:, 0]
        y1 = dets[:, 1]
        x2 = dets[:, 2]
        y2 = dets[:, 3]
        scores = dets[:, 4]
        areas = (x2 - x1 + 1) * (y2 - y1 + 1)
        order = scores.argsort()[::-1]
        keep = []
        while order.size > 0:
            i = order[0]
            keep.append(i)
            xx1 = np.maximum(x1[i], x1[order[1:]])
            yy1 = np.maximum(y1[i], y1[order[1:]])
            xx2 = np.minimum(x2[i], x2[order[1:]])
            yy2 = np.minimum(y2[i], y2[order[1:]])
            w = np.maximum(0.0, xx2 - xx1 + 1)
            h = np.maximum(0.0, yy2 - yy1 + 1)
            inter = w * h
            ovr = inter / (areas[i] + areas[order[1:]] - inter)
            inds = np.where(ovr <= thresh)[0]
            order = order[inds + 1]
        return keep


def reference_mmdet_detect(
    session: onnxruntime.InferenceSession,
    img: np.ndarray,
    score_thr: float,
    nms_thr: float = 0.45,
    size: int = 640,
):
    """The mmdet test path (reference spec §4.4/§4.5, ``test_widerface.py --mode 0``), written
    out plainly: rounded keep-ratio resize, pad 0 in normalised space, clamp, ``score > thr``,
    greedy NMS without +1. Returns (boxes (N,4), scores (N,), kps (N,5,2) or None)."""
    h, w = img.shape[:2]
    f = size / max(h, w)
    nw, nh = int(w * f + 0.5), int(h * f + 0.5)
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    scale = np.array([nw / w, nh / h, nw / w, nh / h], dtype=np.float32)
    x = (resized[:, :, ::-1].astype(np.float32) - 127.5) / 128.0
    padded = np.zeros((size, size, 3), np.float32)
    padded[:nh, :nw] = x
    blob = np.ascontiguousarray(padded.transpose(2, 0, 1)[None])
    outs = session.run(None, {session.get_inputs()[0].name: blob})
    n = len(outs)
    nl = 3 if n in (6, 9) else 5
    strides = [8, 16, 32, 64, 128][:nl]
    na = 2 if nl == 3 else 1
    use_kps = n in (9, 15)
    all_boxes, all_scores, all_kps = [], [], []
    for li, s in enumerate(strides):
        sc = outs[li].reshape(-1)
        bb = outs[nl + li].reshape(-1, 4) * s
        gh, gw = size // s, size // s
        cx, cy = np.meshgrid(np.arange(gw) * s, np.arange(gh) * s)
        c = np.stack([cx.ravel(), cy.ravel()], axis=1).astype(np.float32).repeat(na, axis=0)
        x1 = np.clip(c[:, 0] - bb[:, 0], 0, nw)
        y1 = np.clip(c[:, 1] - bb[:, 1], 0, nh)
        x2 = np.clip(c[:, 0] + bb[:, 2], 0, nw)
        y2 = np.clip(c[:, 1] + bb[:, 3], 0, nh)
        all_boxes.append(np.stack([x1, y1, x2, y2], axis=1) / scale)
        all_scores.append(sc)
        if use_kps:
            kp = outs[2 * nl + li].reshape(-1, 5, 2) * s + c[:, None, :]
            all_kps.append(kp / scale[:2])
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores)
    kps = np.concatenate(all_kps) if use_kps else None
    m = scores > score_thr
    boxes, scores = boxes[m], scores[m]
    kps = kps[m] if kps is not None else None
    order = np.argsort(-scores, kind="stable")
    keep = []
    suppressed = np.zeros(len(order), dtype=bool)
    for a in range(len(order)):
        if suppressed[a]:
            continue
        i = order[a]
        keep.append(i)
        for b in range(a + 1, len(order)):
            j = order[b]
            if suppressed[b]:
                continue
            iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            inter = max(iw, 0.0) * max(ih, 0.0)
            ai = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            aj = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (ai + aj - inter) > nms_thr:
                suppressed[b] = True
    keep_arr = np.asarray(keep, dtype=np.int64)
    return boxes[keep_arr], scores[keep_arr], None if kps is None else kps[keep_arr]
