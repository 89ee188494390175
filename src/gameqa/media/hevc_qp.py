"""Per-picture slice QP of an HEVC (H.265) stream, read from the headers alone (no CABAC, no decoding).

A picture's QP is SliceQpY = 26 + init_qp_minus26 (PPS) + slice_qp_delta (slice segment header), the mean over
its independent slice segments when it has several (dependent segments carry no QP of their own). Everything
follows ITU-T H.265 7.3: parameter sets (7.3.2.2, 7.3.2.3, 7.3.4, 7.3.7) and the slice segment header up to
slice_qp_delta (7.3.6.1-7.3.6.3). Takes what PyAV demuxes from MP4/Matroska (hvcC extradata, length-prefixed
NAL units) and Annex B byte streams (start codes), with parameter sets out of band or in band.

Not supported: screen content coding tools (P/B slices of an SCC stream raise), and layers above the base
layer (nuh_layer_id > 0, e.g. MV-HEVC, are skipped). CU-level QP changes (cu_qp_delta, e.g. x265's adaptive
quantisation) are not seen: this is the QP each picture starts from. A picture's slices are expected in the
packet that holds its first one (as demuxers give them); later slices in another packet are left out.
"""
from __future__ import annotations

from gameqa.errors import MediaError

_VPS, _SPS, _PPS = 32, 33, 34
_SLICE_TYPES = frozenset([*range(0, 10), *range(16, 22)])  # the VCL types in use (10-15, 22-23 are reserved)
_IDR_W_RADL, _IDR_N_LP = 19, 20
_B, _P, _I = 0, 1, 2
_SCC_PROFILES = (9, 11)  # general_profile_idc of Screen-Extended Main and Screen-Extended High Throughput 4:4:4
_HEADER_GUESS = 512  # bytes unescaped first for a slice header; the whole NAL unit when the header is longer


class _Truncated(Exception):
    """The RBSP ended inside a syntax element."""


class _Bits:
    """An MSB-first reader of an RBSP (emulation prevention already removed)."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.end = len(data) * 8

    def u(self, n: int) -> int:
        """u(n): n bits, unsigned."""
        if n == 0:
            return 0
        stop = self.pos + n
        if stop > self.end:
            raise _Truncated
        first, last = self.pos >> 3, (stop + 7) >> 3
        self.pos = stop
        return (int.from_bytes(self.data[first:last], "big") >> ((last << 3) - stop)) & ((1 << n) - 1)

    def flag(self) -> bool:
        """u(1) as a bool."""
        return bool(self.u(1))

    def skip(self, n: int) -> None:
        """Skip n bits."""
        self.pos += n
        if self.pos > self.end:
            raise _Truncated

    def ue(self, limit: int = 0xFFFFFFFE) -> int:
        """ue(v), Exp-Golomb; a value above ``limit`` is garbled."""
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 32:
                raise ValueError("an Exp-Golomb code longer than 32 bits")
        value = (1 << zeros) - 1 + self.u(zeros)
        if value > limit:
            raise ValueError(f"a value ({value}) out of range (at most {limit})")
        return value

    def se(self) -> int:
        """se(v), signed Exp-Golomb."""
        code = self.ue()
        return (code + 1) >> 1 if code & 1 else -(code >> 1)


def _unescape(payload: bytes) -> bytes:
    """The RBSP of a NAL unit payload: every 00 00 03 becomes 00 00 (7.4.2)."""
    return payload.replace(b"\x00\x00\x03", b"\x00\x00") if b"\x00\x00\x03" in payload else payload


def _ceil_log2(value: int) -> int:
    return (value - 1).bit_length() if value > 1 else 0


def _profile_tier_level(bits: _Bits, max_sub_layers_minus1: int) -> bool:
    """Skip profile_tier_level(1, maxNumSubLayersMinus1) (7.3.3); True for a screen content coding profile."""
    bits.skip(3)  # general_profile_space, general_tier_flag
    profile_idc = bits.u(5)
    compatibility = bits.u(32)  # general_profile_compatibility_flag[0..31], [0] first
    bits.skip(4 + 43 + 1 + 8)  # source/constraint flags, general_inbld_flag, general_level_idc
    scc = any(profile_idc == idc or compatibility >> (31 - idc) & 1 for idc in _SCC_PROFILES)
    present = [(bits.flag(), bits.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        bits.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        bits.skip((88 if profile_present else 0) + (8 if level_present else 0))
    return scc


def _skip_scaling_list_data(bits: _Bits) -> None:
    """Skip scaling_list_data() (7.3.4)."""
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not bits.flag():  # scaling_list_pred_mode_flag
                bits.ue(5 * (3 if size_id == 3 else 1))  # scaling_list_pred_matrix_id_delta
                continue
            if size_id > 1:
                bits.se()  # scaling_list_dc_coef_minus8
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                bits.se()  # scaling_list_delta_coef


# A short-term RPS as ((DeltaPocS0, UsedByCurrPicS0) pairs, (DeltaPocS1, UsedByCurrPicS1) pairs).
_Rps = tuple[list[tuple[int, bool]], list[tuple[int, bool]]]


def _st_ref_pic_set(bits: _Bits, index: int, count: int, sets: list[_Rps]) -> _Rps:
    """st_ref_pic_set(stRpsIdx) (7.3.7) with its DeltaPoc/UsedByCurrPic lists (7.4.8); ``sets`` are the SPS's
    earlier ones, ``count`` is num_short_term_ref_pic_sets (the slice header's own set has index == count)."""
    if index and bits.flag():  # inter_ref_pic_set_prediction_flag
        delta_idx = bits.ue(index - 1) + 1 if index == count else 1
        ref_neg, ref_pos = sets[index - delta_idx]
        sign = bits.u(1)
        delta_rps = (1 - 2 * sign) * (bits.ue(2 ** 15 - 1) + 1)
        used, use_delta = [], []
        for _ in range(len(ref_neg) + len(ref_pos) + 1):
            flag = bits.flag()
            used.append(flag)
            use_delta.append(flag or bits.flag())
        n_neg, last = len(ref_neg), len(ref_neg) + len(ref_pos)
        neg: list[tuple[int, bool]] = []
        for j in range(len(ref_pos) - 1, -1, -1):
            d_poc = ref_pos[j][0] + delta_rps
            if d_poc < 0 and use_delta[n_neg + j]:
                neg.append((d_poc, used[n_neg + j]))
        if delta_rps < 0 and use_delta[last]:
            neg.append((delta_rps, used[last]))
        for j in range(n_neg):
            d_poc = ref_neg[j][0] + delta_rps
            if d_poc < 0 and use_delta[j]:
                neg.append((d_poc, used[j]))
        pos: list[tuple[int, bool]] = []
        for j in range(n_neg - 1, -1, -1):
            d_poc = ref_neg[j][0] + delta_rps
            if d_poc > 0 and use_delta[j]:
                pos.append((d_poc, used[j]))
        if delta_rps > 0 and use_delta[last]:
            pos.append((delta_rps, used[last]))
        for j in range(len(ref_pos)):
            d_poc = ref_pos[j][0] + delta_rps
            if d_poc > 0 and use_delta[n_neg + j]:
                pos.append((d_poc, used[n_neg + j]))
        if len(neg) + len(pos) > 16:
            raise ValueError("a reference picture set with more than 16 pictures")
        return neg, pos
    num_negative = bits.ue(16)
    num_positive = bits.ue(16 - num_negative)
    lists = []
    for number, sign in ((num_negative, -1), (num_positive, 1)):
        poc, pics = 0, []
        for _ in range(number):
            poc += sign * (bits.ue(2 ** 15 - 1) + 1)  # delta_poc_s0/s1_minus1
            pics.append((poc, bits.flag()))  # used_by_curr_pic_s0/s1_flag
        lists.append(pics)
    return lists[0], lists[1]


class _Sps:
    """The SPS fields (7.3.2.2.1) a slice segment header needs."""

    def __init__(self, bits: _Bits):
        bits.skip(4)  # sps_video_parameter_set_id
        max_sub_layers_minus1 = bits.u(3)
        if max_sub_layers_minus1 > 6:
            raise ValueError(f"sps_max_sub_layers_minus1 is {max_sub_layers_minus1}")
        bits.skip(1)  # sps_temporal_id_nesting_flag
        self.scc = _profile_tier_level(bits, max_sub_layers_minus1)
        self.id = bits.ue(15)
        chroma_format_idc = bits.ue(3)
        separate_planes = bits.flag() if chroma_format_idc == 3 else False
        self.separate_colour_plane = separate_planes
        self.chroma_array_type = 0 if separate_planes else chroma_format_idc
        width, height = bits.ue(), bits.ue()
        if not width or not height or width > 1 << 16 or height > 1 << 16:
            raise ValueError(f"a picture size of {width}x{height}")
        if bits.flag():  # conformance_window_flag
            for _ in range(4):
                bits.ue()
        bits.ue(8), bits.ue(8)  # bit_depth_luma_minus8, bit_depth_chroma_minus8
        self.poc_lsb_bits = bits.ue(12) + 4
        ordering_all = bits.flag()  # sps_sub_layer_ordering_info_present_flag
        for _ in range(max_sub_layers_minus1 + 1 if ordering_all else 1):
            bits.ue(), bits.ue(), bits.ue()  # max_dec_pic_buffering_minus1, max_num_reorder_pics, max_latency_...
        min_cb_log2 = bits.ue(3) + 3
        ctb_log2 = min_cb_log2 + bits.ue(3)
        if ctb_log2 > 6:
            raise ValueError(f"a coding tree block of 2^{ctb_log2} samples")
        ctb = 1 << ctb_log2
        self.address_bits = _ceil_log2(((width + ctb - 1) >> ctb_log2) * ((height + ctb - 1) >> ctb_log2))
        for _ in range(4):  # log2 transform sizes, max_transform_hierarchy_depth_inter/intra
            bits.ue(32)
        if bits.flag() and bits.flag():  # scaling_list_enabled_flag, sps_scaling_list_data_present_flag
            _skip_scaling_list_data(bits)
        bits.skip(1)  # amp_enabled_flag
        self.sao = bits.flag()  # sample_adaptive_offset_enabled_flag
        if bits.flag():  # pcm_enabled_flag
            bits.skip(8)  # pcm_sample_bit_depth_luma/chroma_minus1
            bits.ue(), bits.ue()  # log2_min_pcm_luma_coding_block_size_minus3, log2_diff_max_min_pcm_...
            bits.skip(1)  # pcm_loop_filter_disabled_flag
        count = bits.ue(64)  # num_short_term_ref_pic_sets
        self.rps: list[_Rps] = []
        for index in range(count):
            self.rps.append(_st_ref_pic_set(bits, index, count, self.rps))
        self.lt_used: list[bool] = []  # used_by_curr_pic_lt_sps_flag per lt_ref_pic_poc_lsb_sps
        self.long_term = bits.flag()  # long_term_ref_pics_present_flag
        if self.long_term:
            for _ in range(bits.ue(32)):  # num_long_term_ref_pics_sps
                bits.skip(self.poc_lsb_bits)  # lt_ref_pic_poc_lsb_sps
                self.lt_used.append(bits.flag())
        self.temporal_mvp = bits.flag()  # sps_temporal_mvp_enabled_flag


class _Pps:
    """The PPS fields (7.3.2.3.1) up to slice_segment_header_extension_present_flag."""

    def __init__(self, bits: _Bits):
        self.id = bits.ue(63)
        self.sps_id = bits.ue(15)
        self.dependent_slices = bits.flag()  # dependent_slice_segments_enabled_flag
        self.output_flag_present = bits.flag()
        self.extra_slice_header_bits = bits.u(3)
        bits.skip(1)  # sign_data_hiding_enabled_flag
        self.cabac_init_present = bits.flag()
        self.num_ref_idx_default = (bits.ue(14) + 1, bits.ue(14) + 1)
        self.init_qp = 26 + bits.se()  # init_qp_minus26
        if not -64 <= self.init_qp <= 51:
            raise ValueError(f"init_qp_minus26 is {self.init_qp - 26}")
        bits.skip(2)  # constrained_intra_pred_flag, transform_skip_enabled_flag
        if bits.flag():  # cu_qp_delta_enabled_flag
            bits.ue(6)  # diff_cu_qp_delta_depth
        bits.se(), bits.se()  # pps_cb_qp_offset, pps_cr_qp_offset
        bits.skip(1)  # pps_slice_chroma_qp_offsets_present_flag
        self.weighted_pred = bits.flag()
        self.weighted_bipred = bits.flag()
        bits.skip(1)  # transquant_bypass_enabled_flag
        tiles = bits.flag()  # tiles_enabled_flag
        bits.skip(1)  # entropy_coding_sync_enabled_flag
        if tiles:
            columns_minus1, rows_minus1 = bits.ue(1023), bits.ue(1023)
            if not bits.flag():  # uniform_spacing_flag
                for _ in range(columns_minus1 + rows_minus1):
                    bits.ue()  # column_width_minus1, row_height_minus1
            bits.skip(1)  # loop_filter_across_tiles_enabled_flag
        bits.skip(1)  # pps_loop_filter_across_slices_enabled_flag
        if bits.flag():  # deblocking_filter_control_present_flag
            bits.skip(1)  # deblocking_filter_override_enabled_flag
            if not bits.flag():  # pps_deblocking_filter_disabled_flag
                bits.se(), bits.se()  # pps_beta_offset_div2, pps_tc_offset_div2
        if bits.flag():  # pps_scaling_list_data_present_flag
            _skip_scaling_list_data(bits)
        self.lists_modification = bits.flag()  # lists_modification_present_flag
        bits.ue(32)  # log2_parallel_merge_level_minus2
        bits.skip(1)  # slice_segment_header_extension_present_flag
        self.scc = False
        if bits.pos < bits.end and bits.flag():  # pps_extension_present_flag
            self.scc = bool(bits.u(8) & 0x10)  # pps_range/multilayer/3d/scc_extension_flag, pps_extension_4bits


class NalQpParser:
    """What the H.264 and HEVC slice-QP readers share: a codec configuration record (avcC, hvcC) or Annex B
    parameter sets as extradata, packets of length-prefixed NAL units or an Annex B byte stream, and pictures as
    their slices' mean QP. A subclass reads its record (``_read_config``) and its NAL units (``_feed``)."""

    RECORD = ""  # the configuration record's name, for errors

    def __init__(self, extradata: bytes | None = None):
        """``extradata``: a configuration record (packets are then length-prefixed NAL units), Annex B parameter
        sets, or None (packets are then an Annex B byte stream)."""
        self._sps: dict = {}
        self._pps: dict = {}
        self._length_size = 0  # 0: Annex B packets
        data = bytes(extradata or b"")
        if data and not (data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")):
            self._feed(self._read_config(data), [])
        else:
            self._feed(_annexb_units(data), [])

    def packet(self, data: bytes) -> list[float]:
        """The QPs, in decode order, of the pictures whose first slice (segment) is in this packet (a whole
        Annex B stream as one packet gives all its pictures); parameter sets in it are kept for later ones."""
        units = _annexb_units(bytes(data)) if not self._length_size else self._length_units(bytes(data))
        pictures: list[list[int]] = []
        self._feed(units, pictures)
        return [sum(qps) / len(qps) for qps in pictures]

    def _read_config(self, data: bytes) -> list[bytes]:
        """The parameter sets of the configuration record; sets ``_length_size``."""
        raise NotImplementedError

    def _feed(self, units: list[bytes], pictures: list[list[int]]) -> None:
        raise NotImplementedError

    def _set_length_size(self, byte: int) -> None:
        self._length_size = (byte & 3) + 1  # lengthSizeMinusOne
        if self._length_size == 3:
            raise MediaError(None, f"invalid {self.RECORD} record: a NAL unit length size of 3 bytes")

    def _sized_units(self, data: bytes, pos: int, count: int, units: list[bytes]) -> int:
        """Append ``count`` NAL units of the record, each after its 16-bit length, from ``pos``; the position after."""
        for _ in range(count):
            size = int.from_bytes(data[pos:pos + 2], "big")
            if pos + 2 + size > len(data):
                raise MediaError(None, f"truncated {self.RECORD} record in the codec extradata")
            units.append(data[pos + 2:pos + 2 + size])
            pos += 2 + size
        return pos

    def _length_units(self, data: bytes) -> list[bytes]:
        units, pos, size_bytes = [], 0, self._length_size
        while pos < len(data):
            size = int.from_bytes(data[pos:pos + size_bytes], "big")
            pos += size_bytes
            if pos + size > len(data) or pos > len(data):
                raise MediaError(None, f"garbled or truncated packet: a NAL unit of {size} bytes at byte "
                                       f"{pos - size_bytes} of a {len(data)}-byte packet")
            units.append(data[pos:pos + size])
            pos += size
        return units


class HevcQpParser(NalQpParser):
    """Slice QPs of HEVC pictures, packet by packet; parameter sets are kept from the extradata (an hvcC record or
    Annex B) and in-band ones."""

    RECORD = "hvcC"

    def _read_config(self, data: bytes) -> list[bytes]:
        if len(data) < 23:
            raise MediaError(None, f"truncated hvcC record in the codec extradata ({len(data)} bytes)")
        self._set_length_size(data[21])
        units: list[bytes] = []
        pos = 23
        for _ in range(data[22]):  # numOfArrays
            if pos + 3 > len(data):
                raise MediaError(None, "truncated hvcC record in the codec extradata")
            count = int.from_bytes(data[pos + 1:pos + 3], "big")  # after array_completeness, NAL_unit_type
            pos = self._sized_units(data, pos + 3, count, units)
        return units

    def _feed(self, units: list[bytes], pictures: list[list[int]]) -> None:
        for unit in units:
            if len(unit) < 2 or unit[1] >> 3:  # too short, or nuh_layer_id > 0
                continue
            if unit[0] & 0x80:
                raise MediaError(None, "garbled NAL unit header (forbidden_zero_bit is set)")
            kind = unit[0] >> 1
            try:
                if kind in _SLICE_TYPES:
                    head = _unescape(unit[2:2 + _HEADER_GUESS])
                    try:
                        qp = self._slice_qp(_Bits(head), kind)
                    except _Truncated:
                        if len(unit) <= 2 + _HEADER_GUESS:
                            raise
                        qp = self._slice_qp(_Bits(_unescape(unit[2:])), kind)
                    if qp is None:
                        continue
                    first, value = qp
                    if first:
                        pictures.append([value])
                    elif pictures:  # a later slice of a picture begun in this packet
                        pictures[-1].append(value)
                elif kind == _SPS:
                    sps = _Sps(_Bits(_unescape(unit[2:])))
                    self._sps[sps.id] = sps
                elif kind == _PPS:
                    pps = _Pps(_Bits(_unescape(unit[2:])))
                    self._pps[pps.id] = pps
            except _Truncated:
                raise MediaError(None, f"truncated {_name(kind)} ({len(unit)} bytes)") from None
            except ValueError as err:
                raise MediaError(None, f"garbled {_name(kind)}: {err}") from None

    def _slice_qp(self, bits: _Bits, kind: int) -> tuple[bool, int] | None:
        """(first_slice_segment_in_pic_flag, SliceQpY) from a slice segment header (7.3.6.1); None when dependent."""
        first = bits.flag()
        if 16 <= kind <= 23:
            bits.skip(1)  # no_output_of_prior_pics_flag
        pps_id = bits.ue(63)
        pps = self._pps.get(pps_id)
        if pps is None:
            raise MediaError(None, f"a slice refers to picture parameter set {pps_id}, which the stream has not given")
        sps = self._sps.get(pps.sps_id)
        if sps is None:
            raise MediaError(None, f"picture parameter set {pps_id} refers to sequence parameter set {pps.sps_id}, "
                                   "which the stream has not given")
        if not first:
            if pps.dependent_slices and bits.flag():  # dependent_slice_segment_flag
                return None
            bits.skip(sps.address_bits)  # slice_segment_address
        bits.skip(pps.extra_slice_header_bits)  # slice_reserved_flag
        slice_type = bits.ue(2)
        if pps.output_flag_present:
            bits.skip(1)  # pic_output_flag
        if sps.separate_colour_plane:
            bits.skip(2)  # colour_plane_id
        total_curr = 0  # NumPicTotalCurr (7-55)
        temporal_mvp = False
        if kind not in (_IDR_W_RADL, _IDR_N_LP):
            bits.skip(sps.poc_lsb_bits)  # slice_pic_order_cnt_lsb
            count = len(sps.rps)
            if not bits.flag():  # short_term_ref_pic_set_sps_flag
                rps = _st_ref_pic_set(bits, count, count, sps.rps)
            else:
                if not count:
                    raise ValueError("a slice picks a short-term RPS from an SPS that has none")
                index = bits.u(_ceil_log2(count))  # short_term_ref_pic_set_idx
                if index >= count:
                    raise ValueError(f"short_term_ref_pic_set_idx {index} of {count}")
                rps = sps.rps[index]
            total_curr = sum(used for _, used in rps[0]) + sum(used for _, used in rps[1])
            if sps.long_term:
                in_sps = bits.ue(len(sps.lt_used)) if sps.lt_used else 0  # num_long_term_sps
                for i in range(in_sps + bits.ue(32)):  # + num_long_term_pics
                    if i < in_sps:
                        index = bits.u(_ceil_log2(len(sps.lt_used)))  # lt_idx_sps
                        if index >= len(sps.lt_used):
                            raise ValueError(f"lt_idx_sps {index} of {len(sps.lt_used)}")
                        total_curr += sps.lt_used[index]
                    else:
                        bits.skip(sps.poc_lsb_bits)  # poc_lsb_lt
                        total_curr += bits.u(1)  # used_by_curr_pic_lt_flag
                    if bits.flag():  # delta_poc_msb_present_flag
                        bits.ue()  # delta_poc_msb_cycle_lt
            if sps.temporal_mvp:
                temporal_mvp = bits.flag()  # slice_temporal_mvp_enabled_flag
        if sps.sao:
            bits.skip(2 if sps.chroma_array_type else 1)  # slice_sao_luma_flag, slice_sao_chroma_flag
        if slice_type != _I:
            if sps.scc or pps.scc:
                raise MediaError(None, "P/B slices of screen content coding (SCC) streams are not supported")
            refs = list(pps.num_ref_idx_default)  # num_ref_idx_l0/l1_active_minus1 + 1
            if bits.flag():  # num_ref_idx_active_override_flag
                refs[0] = bits.ue(14) + 1
                if slice_type == _B:
                    refs[1] = bits.ue(14) + 1
            lists = 2 if slice_type == _B else 1
            if pps.lists_modification and total_curr > 1:  # ref_pic_lists_modification() (7.3.6.2)
                for n in refs[:lists]:
                    if bits.flag():  # ref_pic_list_modification_flag_lX
                        bits.skip(n * _ceil_log2(total_curr))  # list_entry_lX
            if slice_type == _B:
                bits.skip(1)  # mvd_l1_zero_flag
            if pps.cabac_init_present:
                bits.skip(1)  # cabac_init_flag
            if temporal_mvp:
                from_l0 = bits.flag() if slice_type == _B else True  # collocated_from_l0_flag
                if refs[0 if from_l0 else 1] > 1:
                    bits.ue(14)  # collocated_ref_idx
            if (pps.weighted_pred and slice_type == _P) or (pps.weighted_bipred and slice_type == _B):
                self._skip_pred_weight_table(bits, refs[:lists], sps.chroma_array_type)
            bits.ue(4)  # five_minus_max_num_merge_cand
        qp = pps.init_qp + bits.se()  # slice_qp_delta
        if not -64 <= qp <= 51:
            raise ValueError(f"a slice QP of {qp}")
        return first, qp

    @staticmethod
    def _skip_pred_weight_table(bits: _Bits, refs: list[int], chroma: int) -> None:
        """Skip pred_weight_table() (7.3.6.3) for the active reference counts of L0 (and L1)."""
        bits.ue(7)  # luma_log2_weight_denom
        if chroma:
            bits.se()  # delta_chroma_log2_weight_denom
        for n in refs:
            luma = [bits.flag() for _ in range(n)]  # luma_weight_lX_flag
            chroma_flags = [bits.flag() for _ in range(n)] if chroma else [False] * n  # chroma_weight_lX_flag
            for has_luma, has_chroma in zip(luma, chroma_flags):
                for _ in range((2 if has_luma else 0) + (4 if has_chroma else 0)):
                    bits.se()  # delta_luma_weight, luma_offset; delta_chroma_weight, delta_chroma_offset


def _annexb_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (B.2), split at 00 00 01 start codes (trailing zeros dropped)."""
    units = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        start = data.find(b"\x00\x00\x01", begin)
        unit = data[begin:] if start < 0 else data[begin:start]
        units.append(unit.rstrip(b"\x00"))  # trailing_zero_8bits, the zero_byte of a 4-byte start code
    return units


def _name(kind: int) -> str:
    names = {_VPS: "video parameter set", _SPS: "sequence parameter set", _PPS: "picture parameter set"}
    return names.get(kind, "slice segment header")
