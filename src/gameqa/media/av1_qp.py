"""The base quantizer index (``base_q_idx``, 0..255) of every frame of an AV1 stream, read from its OBU headers.

Written from the AV1 bitstream specification (section 5: OBU syntax, sequence header, uncompressed frame header
up to ``quantization_params``; section 7.8 for the short reference signalling, 7.20/7.21 for what each reference
slot keeps). Nothing is decoded: a frame header is read up to its ``base_q_idx`` and the tiles are skipped.

Packets are temporal units in the low-overhead format, as PyAV demuxes them from Matroska/WebM, MP4 and IVF.
A frame header with ``show_existing_frame`` (re-showing a stored frame) brings no new quantizer and is skipped,
as are redundant and copied frame headers. Hidden frames (``show_frame = 0``, e.g. an encoder's alt-ref) are
counted: they are coded frames with their own quantizer, shown later by a ``show_existing_frame`` header.
"""
from __future__ import annotations

from gameqa.errors import MediaError

# OBU types (spec 6.2.2)
_OBU_SEQUENCE_HEADER = 1
_OBU_TEMPORAL_DELIMITER = 2
_OBU_FRAME_HEADER = 3
_OBU_TILE_GROUP = 4
_OBU_FRAME = 6
_OBU_REDUNDANT_FRAME_HEADER = 7

_KEY_FRAME, _INTRA_ONLY_FRAME, _SWITCH_FRAME = 0, 2, 3  # and 1: INTER_FRAME
_NUM_REF_FRAMES = 8
_REFS_PER_FRAME = 7
_ALL_FRAMES = (1 << _NUM_REF_FRAMES) - 1
_SELECT_SCREEN_CONTENT_TOOLS = 2
_SELECT_INTEGER_MV = 2
_SUPERRES_NUM = 8
_SUPERRES_DENOM_MIN = 9
_MAX_TILE_WIDTH = 4096
_MAX_TILE_AREA = 4096 * 2304
_MAX_TILE_COLS = 64
_MAX_TILE_ROWS = 64
# ref_frame_idx positions (ref frame minus LAST_FRAME) for set_frame_refs (spec 7.8)
_LAST, _LAST2, _LAST3, _GOLDEN, _BWDREF, _ALTREF2, _ALTREF = range(7)


class _Bits:
    """Reads big-endian bit fields from ``data[start:end]`` (byte offsets); running past the end is a MediaError."""

    __slots__ = ("data", "start", "pos", "end", "what")

    def __init__(self, data: bytes, start: int, end: int, what: str):
        self.data, self.start, self.pos, self.end, self.what = data, start * 8, start * 8, end * 8, what

    def f(self, n: int) -> int:
        """The next ``n`` bits as an unsigned number (spec f(n))."""
        if n == 0:
            return 0
        stop = self.pos + n
        if stop > self.end:
            raise MediaError(None, f"truncated or garbled AV1 {self.what} (it ends before its fields do)")
        first, last = self.pos >> 3, (stop + 7) >> 3
        chunk = int.from_bytes(self.data[first:last], "big")
        self.pos = stop
        return (chunk >> (last * 8 - stop)) & ((1 << n) - 1)

    def uvlc(self) -> int:
        """Spec uvlc(): an Exp-Golomb style variable-length number."""
        zeros = 0
        while not self.f(1):
            zeros += 1
        if zeros >= 32:
            return (1 << 32) - 1
        return self.f(zeros) + (1 << zeros) - 1

    def ns(self, n: int) -> int:
        """Spec ns(n): a number in 0..n-1 with a non-symmetric unsigned code."""
        w = n.bit_length()  # FloorLog2(n) + 1
        m = (1 << w) - n
        v = self.f(w - 1)
        return v if v < m else (v << 1) - m + self.f(1)


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    """Spec leb128(): the value and the offset after it."""
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise MediaError(None, "truncated AV1 data (an OBU size field runs past the packet)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (i * 7)
        if not byte & 0x80:
            return value, pos
    raise MediaError(None, "garbled AV1 data (an OBU size field longer than 8 bytes)")


def _tile_log2(blk_size: int, target: int) -> int:
    k = 0
    while (blk_size << k) < target:
        k += 1
    return k


class _Sequence:
    """The sequence header fields the frame header needs (spec 5.5)."""

    def __init__(self, r: _Bits):
        self.profile = r.f(3)
        r.f(1)  # still_picture
        self.reduced_still = r.f(1)
        self.timing_info = self.decoder_model_info = self.equal_picture_interval = 0
        self.buffer_removal_time_length = self.frame_presentation_time_length = 0
        self.op_idc = [0]
        self.decoder_model_for_op = [0]
        if self.reduced_still:
            r.f(5)  # seq_level_idx[0]
        else:
            self.timing_info = r.f(1)
            if self.timing_info:
                r.f(32)  # num_units_in_display_tick
                r.f(32)  # time_scale
                self.equal_picture_interval = r.f(1)
                if self.equal_picture_interval:
                    r.uvlc()  # num_ticks_per_picture_minus_1
                self.decoder_model_info = r.f(1)
                if self.decoder_model_info:
                    buffer_delay_length = r.f(5) + 1
                    r.f(32)  # num_units_in_decoding_tick
                    self.buffer_removal_time_length = r.f(5) + 1
                    self.frame_presentation_time_length = r.f(5) + 1
            initial_display_delay = r.f(1)
            count = r.f(5) + 1
            self.op_idc, self.decoder_model_for_op = [], []
            for _ in range(count):
                self.op_idc.append(r.f(12))
                if r.f(5) > 7:  # seq_level_idx
                    r.f(1)  # seq_tier
                present = 0
                if self.decoder_model_info:
                    present = r.f(1)
                    if present:  # operating_parameters_info
                        r.f(buffer_delay_length)  # decoder_buffer_delay
                        r.f(buffer_delay_length)  # encoder_buffer_delay
                        r.f(1)  # low_delay_mode_flag
                self.decoder_model_for_op.append(present)
                if initial_display_delay and r.f(1):
                    r.f(4)  # initial_display_delay_minus_1
        self.operating_point_idc = self.op_idc[0]  # choose_operating_point() = 0
        self.width_bits = r.f(4) + 1
        self.height_bits = r.f(4) + 1
        self.max_width = r.f(self.width_bits) + 1
        self.max_height = r.f(self.height_bits) + 1
        self.frame_id_numbers = 0 if self.reduced_still else r.f(1)
        self.delta_frame_id_length = self.frame_id_length = 0
        if self.frame_id_numbers:
            self.delta_frame_id_length = r.f(4) + 2
            self.frame_id_length = r.f(3) + 1 + self.delta_frame_id_length
        self.sb128 = r.f(1)
        r.f(1)  # enable_filter_intra
        r.f(1)  # enable_intra_edge_filter
        self.enable_order_hint = self.enable_ref_frame_mvs = self.order_hint_bits = 0
        self.force_screen_content_tools = _SELECT_SCREEN_CONTENT_TOOLS
        self.force_integer_mv = _SELECT_INTEGER_MV
        if not self.reduced_still:
            r.f(4)  # enable_interintra_compound, enable_masked_compound, enable_warped_motion, enable_dual_filter
            self.enable_order_hint = r.f(1)
            if self.enable_order_hint:
                r.f(1)  # enable_jnt_comp
                self.enable_ref_frame_mvs = r.f(1)
            if not r.f(1):  # seq_choose_screen_content_tools
                self.force_screen_content_tools = r.f(1)
            if self.force_screen_content_tools > 0:
                if not r.f(1):  # seq_choose_integer_mv
                    self.force_integer_mv = r.f(1)
            if self.enable_order_hint:
                self.order_hint_bits = r.f(3) + 1
        self.enable_superres = r.f(1)
        r.f(2)  # enable_cdef, enable_restoration
        self._color_config(r)
        self.film_grain_params_present = r.f(1)
        # trailing_bits(): a one, then zeros to the end of the OBU
        if r.pos >= r.end or not r.f(1) or any(r.data[(r.pos + 7) >> 3:r.end >> 3]) or (
                r.pos & 7 and r.f(8 - (r.pos & 7))):
            raise MediaError(None, "garbled AV1 sequence header (bad trailing bits)")

    def _color_config(self, r: _Bits) -> None:
        """Spec color_config(): read only to reach film_grain_params_present and the trailing bits."""
        high_bitdepth = r.f(1)
        bit_depth = 8
        if self.profile == 2 and high_bitdepth:
            bit_depth = 12 if r.f(1) else 10
        elif high_bitdepth:
            bit_depth = 10
        mono = 0 if self.profile == 1 else r.f(1)
        primaries = transfer = matrix = 2
        if r.f(1):  # color_description_present_flag
            primaries, transfer, matrix = r.f(8), r.f(8), r.f(8)
        if mono:
            r.f(1)  # color_range
            return
        if not (primaries == 1 and transfer == 13 and matrix == 0):  # sRGB is 4:4:4 full range, unsignalled
            r.f(1)  # color_range
            ss_x = ss_y = 1
            if self.profile == 1:
                ss_x = ss_y = 0
            elif self.profile > 1:
                if bit_depth == 12:
                    ss_x = r.f(1)
                    ss_y = r.f(1) if ss_x else 0
                else:
                    ss_x, ss_y = 1, 0
            if ss_x and ss_y:
                r.f(2)  # chroma_sample_position
        r.f(1)  # separate_uv_delta_q


class _Slot:
    """What a reference slot keeps of the frame stored in it (spec 7.20) that later headers read."""

    __slots__ = ("frame_type", "order_hint", "upscaled_width", "frame_height", "render_width", "render_height")

    def __init__(self, frame_type=None, order_hint=0, upscaled_width=0, frame_height=0, render_width=0,
                 render_height=0):
        self.frame_type, self.order_hint = frame_type, order_hint
        self.upscaled_width, self.frame_height = upscaled_width, frame_height
        self.render_width, self.render_height = render_width, render_height


class _Header:
    """One parsed frame header: what the reference update needs, its quantizer and its tile layout."""

    show_existing = False
    show_frame = True
    shown_key = None  # for show_existing_frame: the slot it shows, when that holds a key frame
    refresh = 0
    frame_type = _KEY_FRAME
    order_hint = 0
    base_q_idx = 0
    tile_cols_log2 = tile_rows_log2 = 0
    num_tiles = 1
    bits = 0  # how many bits of the OBU payload the header used up to base_q_idx
    size = (0, 0, 0, 0)  # UpscaledWidth, FrameHeight, RenderWidth, RenderHeight
    frame_width = 0
    ref_order_hints: list[int] | None = None  # RefOrderHint[] as this header leaves it (ref_order_hint[])


class Av1QpParser:
    """Feeds the temporal units of one AV1 stream and tells each new frame header's ``base_q_idx``.

    ``hidden_frames`` counts the new frames not shown when decoded (``show_frame = 0``), ``shown_existing`` the
    ``show_existing_frame`` headers (each shows one stored frame): a decoder outputs
    ``len(qps) - hidden_frames + shown_existing`` frames.
    """

    def __init__(self, extradata: bytes | None = None):
        """``extradata``: the stream's av1C record (its config OBUs hold the sequence header), raw OBUs, or None."""
        self.seq: _Sequence | None = None
        self.slots = [_Slot() for _ in range(_NUM_REF_FRAMES)]
        self.hidden_frames = 0
        self.shown_existing = 0
        self._current: tuple | None = None  # the frame whose tiles are still coming (SeenFrameHeader = 1)
        data = bytes(extradata or b"")
        if data:
            if data[0] & 0x80:  # av1C: marker 1, version 1, then 3 bytes of fields, then configOBUs
                if data[0] != 0x81 or len(data) < 4:
                    raise MediaError(None, "not an AV1 stream (the codec extradata is not an av1C record)")
                data = data[4:]
            self.packet(data)

    def packet(self, data: bytes) -> list[int]:
        """The ``base_q_idx`` (0..255) of each new frame header in this temporal unit, in bitstream order."""
        data = bytes(data)
        qps: list[int] = []
        self._current = None  # a temporal unit starts a new frame
        pos, n = 0, len(data)
        while pos < n:
            head = data[pos]
            if head & 0x80:
                raise MediaError(None, "garbled AV1 data (an OBU header has its forbidden bit set)")
            obu_type, has_ext, has_size = (head >> 3) & 15, (head >> 2) & 1, (head >> 1) & 1
            pos += 1
            temporal_id = spatial_id = 0
            if has_ext:
                if pos >= n:
                    raise MediaError(None, "truncated AV1 data (an OBU header runs past the packet)")
                temporal_id, spatial_id = data[pos] >> 5, (data[pos] >> 3) & 3
                pos += 1
            if has_size:
                size, pos = _leb128(data, pos)
            else:  # allowed for the last OBU of an MP4 sample
                size = n - pos
            if pos + size > n:
                raise MediaError(None, f"truncated AV1 data (an OBU of {size} bytes, {n - pos} left in the packet)")
            start, pos = pos, pos + size
            if obu_type == _OBU_SEQUENCE_HEADER:
                self.seq = _Sequence(_Bits(data, start, pos, "sequence header"))
                continue
            if obu_type == _OBU_TEMPORAL_DELIMITER:
                self._current = None
                continue
            if obu_type not in (_OBU_FRAME_HEADER, _OBU_FRAME, _OBU_TILE_GROUP):
                continue  # metadata, padding, redundant frame headers, tile lists, reserved types
            if self.seq is None:
                raise MediaError(None, "AV1 frame data before any sequence header")
            idc = self.seq.operating_point_idc
            if idc and has_ext and not ((idc >> temporal_id) & 1 and (idc >> (spatial_id + 8)) & 1):
                continue  # not in operating point 0: a decoder drops it
            if obu_type == _OBU_TILE_GROUP:
                self._tile_group(data, start, pos)
                continue
            if obu_type == _OBU_FRAME_HEADER and self._is_copy(data, start, pos, temporal_id, spatial_id):
                continue  # frame_header_copy()
            header = self._frame_header(_Bits(data, start, pos, "frame header"), temporal_id, spatial_id)
            self._update_refs(header)
            if header.show_existing:
                self.shown_existing += 1
                self._current = None
                continue
            qps.append(header.base_q_idx)
            if not header.show_frame:
                self.hidden_frames += 1
            nbytes = (header.bits + 7) >> 3
            self._current = (temporal_id, spatial_id, header.bits, data[start:start + nbytes], header)
            if obu_type == _OBU_FRAME and header.num_tiles == 1:
                self._current = None  # its one tile group holds the one tile: the frame is complete
        return qps

    def _is_copy(self, data: bytes, start: int, end: int, temporal_id: int, spatial_id: int) -> bool:
        """Whether this OBU_FRAME_HEADER repeats the header of the frame still in progress (bit-identical)."""
        if self._current is None:
            return False
        tid, sid, bits, prefix, _ = self._current
        if (tid, sid) != (temporal_id, spatial_id) or end - start < len(prefix):
            return False
        mine = int.from_bytes(data[start:start + len(prefix)], "big") >> (len(prefix) * 8 - bits)
        return mine == int.from_bytes(prefix, "big") >> (len(prefix) * 8 - bits)

    def _tile_group(self, data: bytes, start: int, end: int) -> None:
        """Spec tile_group_obu() start: the frame ends with the group that holds its last tile."""
        if self._current is None:
            return
        header = self._current[4]
        r = _Bits(data, start, end, "tile group")
        last = header.num_tiles - 1
        if header.num_tiles > 1 and r.f(1):  # tile_start_and_end_present_flag
            tile_bits = header.tile_cols_log2 + header.tile_rows_log2
            r.f(tile_bits)  # tg_start
            last = r.f(tile_bits)  # tg_end
        if last == header.num_tiles - 1:
            self._current = None

    def _update_refs(self, h: _Header) -> None:
        """Spec 7.20 (and 7.21 for a shown key frame): store this frame in the slots refresh_frame_flags names."""
        if h.show_existing:
            if h.shown_key is None:
                return
            shown = self.slots[h.shown_key]
            self.slots = [_Slot(shown.frame_type, shown.order_hint, shown.upscaled_width, shown.frame_height,
                                shown.render_width, shown.render_height) for _ in range(_NUM_REF_FRAMES)]
            return
        for i in range(_NUM_REF_FRAMES):
            if h.refresh >> i & 1:
                self.slots[i] = _Slot(h.frame_type, h.order_hint, *h.size)
            elif h.ref_order_hints is not None:  # error-resilient ref_order_hint[] overrides what a slot holds
                self.slots[i].order_hint = h.ref_order_hints[i]

    def _frame_header(self, r: _Bits, temporal_id: int, spatial_id: int) -> _Header:
        """Spec uncompressed_header() up to quantization_params().base_q_idx; changes no state."""
        seq = self.seq
        h = _Header()
        id_len = seq.frame_id_length
        slots = self.slots
        order_hints = [slot.order_hint for slot in slots]
        if seq.reduced_still:
            frame_type, show_frame, error_resilient = _KEY_FRAME, 1, 1  # and show_existing_frame = 0
        else:
            if r.f(1):  # show_existing_frame
                h.show_existing = True
                idx = r.f(3)  # frame_to_show_map_idx
                if seq.decoder_model_info and not seq.equal_picture_interval:
                    r.f(seq.frame_presentation_time_length)  # temporal_point_info()
                if seq.frame_id_numbers:
                    r.f(id_len)  # display_frame_id
                if slots[idx].frame_type is None:
                    raise MediaError(None, "AV1 frame header shows an empty reference slot")
                if slots[idx].frame_type == _KEY_FRAME:
                    h.shown_key = idx
                    h.refresh = _ALL_FRAMES
                return h
            frame_type = r.f(2)
            show_frame = r.f(1)
            if show_frame and seq.decoder_model_info and not seq.equal_picture_interval:
                r.f(seq.frame_presentation_time_length)  # temporal_point_info()
            if not show_frame:
                r.f(1)  # showable_frame
            if frame_type == _SWITCH_FRAME or (frame_type == _KEY_FRAME and show_frame):
                error_resilient = 1
            else:
                error_resilient = r.f(1)
        h.frame_type, h.show_frame = frame_type, bool(show_frame)
        intra = frame_type in (_KEY_FRAME, _INTRA_ONLY_FRAME)
        if frame_type == _KEY_FRAME and show_frame:
            order_hints = [0] * _NUM_REF_FRAMES  # RefOrderHint[i] = 0
        disable_cdf_update = r.f(1)
        if seq.force_screen_content_tools == _SELECT_SCREEN_CONTENT_TOOLS:
            screen_content = r.f(1)
        else:
            screen_content = seq.force_screen_content_tools
        force_integer_mv = 0
        if screen_content:
            force_integer_mv = r.f(1) if seq.force_integer_mv == _SELECT_INTEGER_MV else seq.force_integer_mv
        if intra:
            force_integer_mv = 1
        if seq.frame_id_numbers:
            r.f(id_len)  # current_frame_id
        if frame_type == _SWITCH_FRAME:
            size_override = 1
        elif seq.reduced_still:
            size_override = 0
        else:
            size_override = r.f(1)
        h.order_hint = r.f(seq.order_hint_bits)
        if not (intra or error_resilient):  # else primary_ref_frame = PRIMARY_REF_NONE
            r.f(3)  # primary_ref_frame
        if seq.decoder_model_info and r.f(1):  # buffer_removal_time_present_flag
            for op, present in enumerate(seq.decoder_model_for_op):
                if present:
                    idc = seq.op_idc[op]
                    if idc == 0 or ((idc >> temporal_id) & 1 and (idc >> (spatial_id + 8)) & 1):
                        r.f(seq.buffer_removal_time_length)  # buffer_removal_time[op]
        if frame_type == _SWITCH_FRAME or (frame_type == _KEY_FRAME and show_frame):
            h.refresh = _ALL_FRAMES
        else:
            h.refresh = r.f(8)
        if (not intra or h.refresh != _ALL_FRAMES) and error_resilient and seq.enable_order_hint:
            for i in range(_NUM_REF_FRAMES):
                hint = r.f(seq.order_hint_bits)  # ref_order_hint[i]
                order_hints[i] = hint
        if intra:
            self._frame_size(r, h, size_override)
            self._render_size(r, h)
            if screen_content and h.size[0] == h.frame_width:
                r.f(1)  # allow_intrabc
        else:
            short_signaling = r.f(1) if seq.enable_order_hint else 0
            ref_frame_idx = [0] * _REFS_PER_FRAME
            if short_signaling:
                last_idx, gold_idx = r.f(3), r.f(3)
                ref_frame_idx = self._set_frame_refs(last_idx, gold_idx, h.order_hint, order_hints)
            for i in range(_REFS_PER_FRAME):
                if not short_signaling:
                    ref_frame_idx[i] = r.f(3)
                if seq.frame_id_numbers:
                    r.f(seq.delta_frame_id_length)  # delta_frame_id_minus_1
            if size_override and not error_resilient:
                self._frame_size_with_refs(r, h, size_override, ref_frame_idx)
            else:
                self._frame_size(r, h, size_override)
                self._render_size(r, h)
            if not force_integer_mv:
                r.f(1)  # allow_high_precision_mv
            if not r.f(1):  # is_filter_switchable
                r.f(2)  # interpolation_filter
            r.f(1)  # is_motion_mode_switchable
            if not error_resilient and seq.enable_ref_frame_mvs:
                r.f(1)  # use_ref_frame_mvs
        if not seq.reduced_still and not disable_cdf_update:
            r.f(1)  # disable_frame_end_update_cdf
        self._tile_info(r, h)
        h.base_q_idx = r.f(8)  # quantization_params()
        h.bits = r.pos - r.start
        h.ref_order_hints = order_hints
        return h

    def _frame_size(self, r: _Bits, h: _Header, size_override: int) -> None:
        """Spec frame_size() with superres_params() (compute_image_size() happens in _tile_info)."""
        seq = self.seq
        if size_override:
            width, height = r.f(seq.width_bits) + 1, r.f(seq.height_bits) + 1
        else:
            width, height = seq.max_width, seq.max_height
        h.size = (width, height, 0, 0)
        self._superres(r, h)

    def _superres(self, r: _Bits, h: _Header) -> None:
        """Spec superres_params(): FrameWidth from UpscaledWidth and the superres denominator."""
        denom = _SUPERRES_NUM
        if self.seq.enable_superres and r.f(1):  # use_superres
            denom = r.f(3) + _SUPERRES_DENOM_MIN  # coded_denom
        upscaled = h.size[0]
        h.frame_width = (upscaled * _SUPERRES_NUM + denom // 2) // denom

    def _render_size(self, r: _Bits, h: _Header) -> None:
        """Spec render_size()."""
        upscaled, height = h.size[0], h.size[1]
        if r.f(1):  # render_and_frame_size_different
            h.size = (upscaled, height, r.f(16) + 1, r.f(16) + 1)
        else:
            h.size = (upscaled, height, upscaled, height)

    def _frame_size_with_refs(self, r: _Bits, h: _Header, size_override: int, ref_frame_idx: list[int]) -> None:
        """Spec frame_size_with_refs(): take the size of the first reference flagged found_ref."""
        for i in range(_REFS_PER_FRAME):
            if r.f(1):  # found_ref
                slot = self.slots[ref_frame_idx[i]]
                if slot.frame_type is None:
                    raise MediaError(None, "AV1 frame header takes its size from an empty reference slot")
                h.size = (slot.upscaled_width, slot.frame_height, slot.render_width, slot.render_height)
                self._superres(r, h)
                return
        self._frame_size(r, h, size_override)
        self._render_size(r, h)

    def _set_frame_refs(self, last_idx: int, gold_idx: int, order_hint: int, ref_hints: list[int]) -> list[int]:
        """Spec 7.8: the seven reference slots chosen from LAST and GOLDEN by order hints."""
        bits = self.seq.order_hint_bits
        ref = [-1] * _REFS_PER_FRAME
        ref[_LAST], ref[_GOLDEN] = last_idx, gold_idx
        used = [False] * _NUM_REF_FRAMES
        used[last_idx] = used[gold_idx] = True
        cur = 1 << (bits - 1)
        half = 1 << (bits - 1)

        def relative(a: int, b: int) -> int:  # get_relative_dist()
            diff = a - b
            return (diff & (half - 1)) - (diff & half)

        shifted = [cur + relative(ref_hints[i], order_hint) for i in range(_NUM_REF_FRAMES)]

        def pick(backward: bool, latest: bool) -> int:
            best, best_hint = -1, 0
            for i in range(_NUM_REF_FRAMES):
                hint = shifted[i]
                if used[i] or (hint >= cur) != backward:
                    continue
                if best < 0 or (hint >= best_hint if latest else hint < best_hint):
                    best, best_hint = i, hint
            return best

        for position, backward, latest in ((_ALTREF, True, True), (_BWDREF, True, False), (_ALTREF2, True, False)):
            found = pick(backward, latest)
            if found >= 0:
                ref[position] = found
                used[found] = True
        for position in (_LAST2, _LAST3, _BWDREF, _ALTREF2, _ALTREF):
            if ref[position] < 0:
                found = pick(False, True)
                if found >= 0:
                    ref[position] = found
                    used[found] = True
        earliest, earliest_hint = -1, 0
        for i in range(_NUM_REF_FRAMES):
            if earliest < 0 or shifted[i] < earliest_hint:
                earliest, earliest_hint = i, shifted[i]
        return [earliest if idx < 0 else idx for idx in ref]

    def _tile_info(self, r: _Bits, h: _Header) -> None:
        """Spec compute_image_size() and tile_info(): reads the tile layout, keeps the tile count."""
        mi_cols = 2 * ((h.frame_width + 7) >> 3)
        mi_rows = 2 * ((h.size[1] + 7) >> 3)
        sb128 = self.seq.sb128
        sb_cols = (mi_cols + 31) >> 5 if sb128 else (mi_cols + 15) >> 4
        sb_rows = (mi_rows + 31) >> 5 if sb128 else (mi_rows + 15) >> 4
        sb_size = (5 if sb128 else 4) + 2
        max_tile_width_sb = _MAX_TILE_WIDTH >> sb_size
        max_tile_area_sb = _MAX_TILE_AREA >> (2 * sb_size)
        min_log2_tile_cols = _tile_log2(max_tile_width_sb, sb_cols)
        max_log2_tile_cols = _tile_log2(1, min(sb_cols, _MAX_TILE_COLS))
        max_log2_tile_rows = _tile_log2(1, min(sb_rows, _MAX_TILE_ROWS))
        min_log2_tiles = max(min_log2_tile_cols, _tile_log2(max_tile_area_sb, sb_rows * sb_cols))
        if r.f(1):  # uniform_tile_spacing_flag
            cols_log2 = min_log2_tile_cols
            while cols_log2 < max_log2_tile_cols and r.f(1):  # increment_tile_cols_log2
                cols_log2 += 1
            tile_width_sb = (sb_cols + (1 << cols_log2) - 1) >> cols_log2
            tile_cols = -(-sb_cols // tile_width_sb)
            rows_log2 = max(min_log2_tiles - cols_log2, 0)
            while rows_log2 < max_log2_tile_rows and r.f(1):  # increment_tile_rows_log2
                rows_log2 += 1
            tile_height_sb = (sb_rows + (1 << rows_log2) - 1) >> rows_log2
            tile_rows = -(-sb_rows // tile_height_sb)
        else:
            widest, start, tile_cols = 0, 0, 0
            while start < sb_cols:
                width = r.ns(min(sb_cols - start, max_tile_width_sb)) + 1  # width_in_sbs_minus_1
                widest = max(widest, width)
                start += width
                tile_cols += 1
            cols_log2 = _tile_log2(1, tile_cols)
            area = (sb_rows * sb_cols) >> (min_log2_tiles + 1) if min_log2_tiles > 0 else sb_rows * sb_cols
            max_tile_height_sb = max(area // widest, 1)
            start, tile_rows = 0, 0
            while start < sb_rows:
                start += r.ns(min(sb_rows - start, max_tile_height_sb)) + 1  # height_in_sbs_minus_1
                tile_rows += 1
            rows_log2 = _tile_log2(1, tile_rows)
        if cols_log2 > 0 or rows_log2 > 0:
            r.f(rows_log2 + cols_log2)  # context_update_tile_id
            r.f(2)  # tile_size_bytes_minus_1
        h.tile_cols_log2, h.tile_rows_log2, h.num_tiles = cols_log2, rows_log2, tile_cols * tile_rows
