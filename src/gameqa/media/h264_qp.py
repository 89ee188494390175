"""Per-picture slice QP of an H.264 (AVC) stream, read from the headers alone (no CABAC, no decoding).

A picture's QP is SliceQPY = 26 + pic_init_qp_minus26 (PPS) + slice_qp_delta (slice header), the mean over its
slices when it has several (an encoder's sliced threads, or row-level rate control, give each slice its own). The
syntax follows ITU-T H.264 7.3: the sequence and picture parameter sets (7.3.2.1.1, 7.3.2.2) and the slice header
up to slice_qp_delta (7.3.3 with 7.3.3.1-7.3.3.3). Takes what PyAV demuxes from MP4/Matroska (avcC extradata,
length-prefixed NAL units) and Annex B byte streams (start codes), parameter sets out of band or in band.

Not seen: macroblock-level QP changes (mb_qp_delta, e.g. x264's adaptive quantisation): this is the QP each slice
starts from. Not supported (a MediaError says so): slice groups (FMO, Baseline/Extended only), data partitioning,
and the MVC/SVC extension NAL units (skipped: the base view is read). A picture's slices are expected in the packet
that holds its first one (as demuxers give them); later slices in another packet are left out.
"""
from __future__ import annotations

from gameqa.errors import MediaError
from gameqa.media.hevc_qp import NalQpParser, _Bits, _Truncated, _unescape

_NON_IDR, _PARTITION_A, _IDR, _SPS, _PPS = 1, 2, 5, 7, 8
_P, _B, _I, _SP, _SI = 0, 1, 2, 3, 4
_HIGH_PROFILES = frozenset([100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135])  # chroma info in the SPS
_HEADER_GUESS = 256  # bytes unescaped first for a slice header; the whole NAL unit when the header is longer


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    """Skip scaling_list() (7.3.2.1.1.1) of ``size`` coefficients."""
    last = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last + bits.se() + 256) % 256  # delta_scale
        last = next_scale or last


class _Sps:
    """The SPS fields (7.3.2.1.1) a slice header needs."""

    def __init__(self, bits: _Bits):
        profile_idc = bits.u(8)
        bits.skip(16)  # constraint_set flags, reserved_zero_2bits, level_idc
        self.id = bits.ue(31)
        chroma_format_idc, separate_planes = 1, False
        if profile_idc in _HIGH_PROFILES:
            chroma_format_idc = bits.ue(3)
            if chroma_format_idc == 3:
                separate_planes = bits.flag()
            bits.ue(6), bits.ue(6)  # bit_depth_luma_minus8, bit_depth_chroma_minus8
            bits.skip(1)  # qpprime_y_zero_transform_bypass_flag
            if bits.flag():  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma_format_idc != 3 else 12):
                    if bits.flag():  # seq_scaling_list_present_flag[i]
                        _skip_scaling_list(bits, 16 if i < 6 else 64)
        self.separate_colour_plane = separate_planes
        self.chroma_array_type = 0 if separate_planes else chroma_format_idc
        self.frame_num_bits = bits.ue(12) + 4  # log2_max_frame_num_minus4
        self.poc_type = bits.ue(2)
        self.poc_lsb_bits = 0
        self.delta_poc_always_zero = False
        if self.poc_type == 0:
            self.poc_lsb_bits = bits.ue(12) + 4  # log2_max_pic_order_cnt_lsb_minus4
        elif self.poc_type == 1:
            self.delta_poc_always_zero = bits.flag()
            bits.se(), bits.se()  # offset_for_non_ref_pic, offset_for_top_to_bottom_field
            for _ in range(bits.ue(255)):  # num_ref_frames_in_pic_order_cnt_cycle
                bits.se()  # offset_for_ref_frame
        bits.ue(), bits.skip(1)  # max_num_ref_frames, gaps_in_frame_num_value_allowed_flag
        width, height = bits.ue() + 1, bits.ue() + 1  # in macroblocks (map units)
        if width > 1 << 12 or height > 1 << 12:
            raise ValueError(f"a picture of {width}x{height} macroblocks")
        self.frame_mbs_only = bits.flag()


class _Pps:
    """The PPS fields (7.3.2.2) a slice header needs."""

    def __init__(self, bits: _Bits):
        self.id = bits.ue(255)
        self.sps_id = bits.ue(31)
        self.cabac = bits.flag()  # entropy_coding_mode_flag
        self.bottom_field_poc = bits.flag()  # bottom_field_pic_order_in_frame_present_flag
        if bits.ue(7):  # num_slice_groups_minus1
            raise MediaError(None, "slice groups (FMO) are not supported")
        self.num_ref_idx_default = [bits.ue(31) + 1, bits.ue(31) + 1]
        self.weighted_pred = bits.flag()
        self.weighted_bipred_idc = bits.u(2)
        self.init_qp = 26 + bits.se()  # pic_init_qp_minus26
        bits.se(), bits.se()  # pic_init_qs_minus26, chroma_qp_index_offset
        bits.skip(2)  # deblocking_filter_control_present_flag, constrained_intra_pred_flag
        self.redundant_pic_cnt = bits.flag()


class H264QpParser(NalQpParser):
    """Slice QPs of H.264 pictures, packet by packet; parameter sets are kept from the extradata (an avcC record or
    Annex B) and in-band ones."""

    RECORD = "avcC"

    def _read_config(self, data: bytes) -> list[bytes]:
        if len(data) < 7:
            raise MediaError(None, f"truncated avcC record in the codec extradata ({len(data)} bytes)")
        self._set_length_size(data[4])
        units: list[bytes] = []
        pos = 5
        for count_mask in (0x1F, 0xFF):  # numOfSequenceParameterSets, numOfPictureParameterSets
            if pos >= len(data):
                raise MediaError(None, "truncated avcC record in the codec extradata")
            pos = self._sized_units(data, pos + 1, data[pos] & count_mask, units)
        return units

    def _feed(self, units: list[bytes], pictures: list[list[int]]) -> None:
        for unit in units:
            if not unit:
                continue
            if unit[0] & 0x80:
                raise MediaError(None, "garbled NAL unit header (forbidden_zero_bit is set)")
            kind, ref_idc = unit[0] & 0x1F, unit[0] >> 5
            try:
                if kind in (_NON_IDR, _IDR):
                    try:
                        first, qp = self._slice_qp(_Bits(_unescape(unit[1:1 + _HEADER_GUESS])), kind, ref_idc)
                    except _Truncated:
                        if len(unit) <= 1 + _HEADER_GUESS:
                            raise
                        first, qp = self._slice_qp(_Bits(_unescape(unit[1:])), kind, ref_idc)
                    if first:
                        pictures.append([qp])
                    elif pictures:  # a later slice of a picture begun in this packet
                        pictures[-1].append(qp)
                elif kind == _PARTITION_A:
                    raise MediaError(None, "data-partitioned slices (Extended profile) are not supported")
                elif kind == _SPS:
                    sps = _Sps(_Bits(_unescape(unit[1:])))
                    self._sps[sps.id] = sps
                elif kind == _PPS:
                    pps = _Pps(_Bits(_unescape(unit[1:])))
                    self._pps[pps.id] = pps
            except _Truncated:
                raise MediaError(None, f"truncated {_name(kind)} ({len(unit)} bytes)") from None
            except ValueError as err:
                raise MediaError(None, f"garbled {_name(kind)}: {err}") from None

    def _slice_qp(self, bits: _Bits, kind: int, ref_idc: int) -> tuple[bool, int]:
        """(first_mb_in_slice == 0, SliceQPY) from a slice header (7.3.3)."""
        first = bits.ue() == 0  # first_mb_in_slice
        slice_type = bits.ue(9) % 5
        pps_id = bits.ue(255)
        pps = self._pps.get(pps_id)
        if pps is None:
            raise MediaError(None, f"a slice refers to picture parameter set {pps_id}, which the stream has not given")
        sps = self._sps.get(pps.sps_id)
        if sps is None:
            raise MediaError(None, f"picture parameter set {pps_id} refers to sequence parameter set {pps.sps_id}, "
                                   "which the stream has not given")
        if sps.separate_colour_plane:
            bits.skip(2)  # colour_plane_id
        bits.skip(sps.frame_num_bits)  # frame_num
        field = False
        if not sps.frame_mbs_only:
            field = bits.flag()  # field_pic_flag
            if field:
                bits.skip(1)  # bottom_field_flag
        if kind == _IDR:
            bits.ue(65535)  # idr_pic_id
        if sps.poc_type == 0:
            bits.skip(sps.poc_lsb_bits)  # pic_order_cnt_lsb
            if pps.bottom_field_poc and not field:
                bits.se()  # delta_pic_order_cnt_bottom
        elif sps.poc_type == 1 and not sps.delta_poc_always_zero:
            bits.se()  # delta_pic_order_cnt[0]
            if pps.bottom_field_poc and not field:
                bits.se()  # delta_pic_order_cnt[1]
        if pps.redundant_pic_cnt:
            bits.ue(127)  # redundant_pic_cnt
        if slice_type == _B:
            bits.skip(1)  # direct_spatial_mv_pred_flag
        refs = list(pps.num_ref_idx_default)
        if slice_type in (_P, _SP, _B):
            if bits.flag():  # num_ref_idx_active_override_flag
                refs[0] = bits.ue(31) + 1
                if slice_type == _B:
                    refs[1] = bits.ue(31) + 1
        lists = 2 if slice_type == _B else 1 if slice_type in (_P, _SP) else 0
        for _ in range(lists):  # ref_pic_list_modification() (7.3.3.1)
            if bits.flag():  # ref_pic_list_modification_flag_lX
                for _ in range(64):
                    idc = bits.ue(5)  # modification_of_pic_nums_idc
                    if idc == 3:
                        break
                    bits.ue()  # abs_diff_pic_num_minus1 or long_term_pic_num
                else:
                    raise ValueError("a reference list modification that never ends")
        if (pps.weighted_pred and slice_type in (_P, _SP)) or (pps.weighted_bipred_idc == 1 and slice_type == _B):
            self._skip_pred_weight_table(bits, refs[:lists], sps.chroma_array_type)
        if ref_idc:  # dec_ref_pic_marking() (7.3.3.3)
            if kind == _IDR:
                bits.skip(2)  # no_output_of_prior_pics_flag, long_term_reference_flag
            elif bits.flag():  # adaptive_ref_pic_marking_mode_flag
                for _ in range(64):
                    operation = bits.ue(6)  # memory_management_control_operation
                    if operation == 0:
                        break
                    if operation in (1, 3):
                        bits.ue()  # difference_of_pic_nums_minus1
                    if operation == 2:
                        bits.ue()  # long_term_pic_num
                    if operation in (3, 6):
                        bits.ue()  # long_term_frame_idx
                    if operation == 4:
                        bits.ue()  # max_long_term_frame_idx_plus1
                else:
                    raise ValueError("a reference marking that never ends")
        if pps.cabac and slice_type not in (_I, _SI):
            bits.ue(2)  # cabac_init_idc
        qp = pps.init_qp + bits.se()  # slice_qp_delta
        if not -36 <= qp <= 51:  # -QpBdOffsetY (36 at 14 bits) to 51
            raise ValueError(f"a slice QP of {qp}")
        return first, qp

    @staticmethod
    def _skip_pred_weight_table(bits: _Bits, refs: list[int], chroma: int) -> None:
        """Skip pred_weight_table() (7.3.3.2) for the active reference counts of L0 (and L1)."""
        bits.ue(7)  # luma_log2_weight_denom
        if chroma:
            bits.ue(7)  # chroma_log2_weight_denom
        for n in refs:
            for _ in range(n):
                if bits.flag():  # luma_weight_lX_flag
                    bits.se(), bits.se()  # luma_weight, luma_offset
                if chroma and bits.flag():  # chroma_weight_lX_flag
                    for _ in range(4):
                        bits.se()  # chroma_weight, chroma_offset for Cb and Cr


def _name(kind: int) -> str:
    return {_SPS: "sequence parameter set", _PPS: "picture parameter set"}.get(kind, "slice header")
