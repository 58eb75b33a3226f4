package rtspserve

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
)

// clockRate is the RTP clock of H.264 and H.265 video.
const clockRate = 90000

// clip is a video track loaded into memory, ready to send.
type clip struct {
	codec         string // "H264" or "H265"
	vps, sps, pps []byte // vps only for H.265
	frames        []frame
	duration      int64 // 90 kHz
}

// frame is one access unit in decode order. Keyframes carry the
// parameter sets in front of their first slice.
type frame struct {
	dts int64 // 90 kHz from the clip's start; the first frame is 0
	pts int64 // 90 kHz; the first frame is 0 (B-frames may run behind dts)
	key bool
	au  [][]byte
}

// loadClip reads the first H.264 or H.265 track of an MP4 file.
func loadClip(path string) (*clip, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	virt, err := normalizeMP4(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var p pmp4.Presentation
	if err := p.Unmarshal(bytes.NewReader(virt)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(p.Tracks) == 0 {
		return nil, fmt.Errorf("%s: no H.264 or H.265 track", path)
	}
	c, err := clipFromTrack(p.Tracks[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func clipFromTrack(t *pmp4.Track) (*clip, error) {
	c := &clip{}
	switch codec := t.Codec.(type) {
	case *mp4.CodecH264:
		c.codec, c.sps, c.pps = "H264", codec.SPS, codec.PPS
	case *mp4.CodecH265:
		c.codec, c.vps, c.sps, c.pps = "H265", codec.VPS, codec.SPS, codec.PPS
	default:
		return nil, fmt.Errorf("unsupported codec %T", t.Codec)
	}
	if t.TimeScale == 0 {
		return nil, errors.New("track has no timescale")
	}
	to90k := func(v int64) int64 {
		ts := int64(t.TimeScale)
		return v/ts*clockRate + v%ts*clockRate/ts
	}

	// Skip anything before the first keyframe: a stream starts with one.
	first := 0
	var skipped int64
	for first < len(t.Samples) && t.Samples[first].IsNonSyncSample {
		skipped += int64(t.Samples[first].Duration)
		first++
	}
	samples := t.Samples[first:]
	if len(samples) == 0 {
		return nil, errors.New("no keyframe")
	}

	var dts int64 // track timescale
	off0 := int64(samples[0].PTSOffset)
	for _, s := range samples {
		payload, err := s.GetPayload()
		if err != nil {
			return nil, err
		}
		var nalus h264.AVCC
		if err := nalus.Unmarshal(payload); err != nil {
			return nil, fmt.Errorf("sample at %d: %w", dts, err)
		}
		f := frame{
			dts: to90k(dts),
			pts: to90k(dts + int64(s.PTSOffset) - off0),
			key: !s.IsNonSyncSample,
		}
		if f.key {
			f.au = c.params()
		}
		for _, n := range nalus {
			if len(n) > 0 && !c.dropNALU(n) {
				f.au = append(f.au, n)
			}
		}
		if len(f.au) == 0 {
			return nil, fmt.Errorf("empty sample at %d", dts)
		}
		c.frames = append(c.frames, f)
		dts += int64(s.Duration)
	}
	c.duration = to90k(dts)
	if c.duration <= 0 {
		return nil, errors.New("track has no duration")
	}
	return c, nil
}

// params are the parameter sets that go in front of every keyframe.
func (c *clip) params() [][]byte {
	if c.codec == "H265" {
		return [][]byte{c.vps, c.sps, c.pps}
	}
	return [][]byte{c.sps, c.pps}
}

// dropNALU tells the NAL units that are removed from samples: parameter
// sets (keyframes get the track's own in front) and access unit
// delimiters.
func (c *clip) dropNALU(n []byte) bool {
	if c.codec == "H265" {
		switch h265.NALUType((n[0] >> 1) & 0x3f) {
		case h265.NALUType_VPS_NUT, h265.NALUType_SPS_NUT, h265.NALUType_PPS_NUT, h265.NALUType_AUD_NUT:
			return true
		}
		return false
	}
	switch h264.NALUType(n[0] & 0x1f) {
	case h264.NALUTypeSPS, h264.NALUTypePPS, h264.NALUTypeAccessUnitDelimiter:
		return true
	}
	return false
}

// The MP4 rewrite below exists because pmp4.Presentation.Unmarshal only
// reads the exact layout that mediacommon writes (ftyp, moov, mdat, and
// no other boxes), while ffmpeg writes mdat before moov and adds boxes
// such as free, udta, pasp, btrt and sdtp. normalizeMP4 builds a file in
// that layout: the original ftyp, a moov with one video track and only
// the boxes pmp4 knows, then one mdat that holds the whole original file,
// with the chunk offsets moved to match.

type box struct {
	typ  string
	head []byte // a container's bytes before its children; a leaf's payload
	kids []*box
}

func (b *box) size() int {
	n := 8 + len(b.head)
	for _, k := range b.kids {
		n += k.size()
	}
	return n
}

func (b *box) appendTo(out []byte) []byte {
	out = binary.BigEndian.AppendUint32(out, uint32(b.size()))
	out = append(out, b.typ...)
	out = append(out, b.head...)
	for _, k := range b.kids {
		out = k.appendTo(out)
	}
	return out
}

func (b *box) kid(typ string) *box {
	for _, k := range b.kids {
		if k.typ == typ {
			return k
		}
	}
	return nil
}

// keep leaves the children of these types, in this order.
func (b *box) keep(types ...string) {
	var kids []*box
	for _, t := range types {
		if k := b.kid(t); k != nil {
			kids = append(kids, k)
		}
	}
	b.kids = kids
}

// headLen is how many bytes of a container come before its children.
var headLen = map[string]int{
	"moov": 0, "trak": 0, "edts": 0, "mdia": 0, "minf": 0, "stbl": 0,
	"stsd": 8,                          // version, flags, entry count
	"avc1": 78, "hev1": 78, "hvc1": 78, // VisualSampleEntry fields
}

// splitBoxes parses consecutive boxes.
func splitBoxes(buf []byte) ([]*box, error) {
	var out []*box
	for len(buf) > 0 {
		if len(buf) < 8 {
			return nil, errors.New("truncated box")
		}
		size := uint64(binary.BigEndian.Uint32(buf))
		typ := string(buf[4:8])
		hdr := uint64(8)
		switch size {
		case 0:
			size = uint64(len(buf))
		case 1:
			if len(buf) < 16 {
				return nil, errors.New("truncated box")
			}
			size, hdr = binary.BigEndian.Uint64(buf[8:]), 16
		}
		if size < hdr || size > uint64(len(buf)) {
			return nil, fmt.Errorf("bad size of box %q", typ)
		}
		b := &box{typ: typ}
		body := buf[hdr:size]
		if n, ok := headLen[typ]; ok {
			if len(body) < n {
				return nil, fmt.Errorf("truncated box %q", typ)
			}
			b.head = body[:n]
			kids, err := splitBoxes(body[n:])
			if err != nil {
				return nil, err
			}
			b.kids = kids
		} else {
			b.head = body
		}
		out = append(out, b)
		buf = buf[size:]
	}
	return out, nil
}

// videoTrack tidies a trak for pmp4 and reports whether it is H.264 or
// H.265 video.
func videoTrack(trak *box) bool {
	mdia := trak.kid("mdia")
	if mdia == nil || trak.kid("tkhd") == nil {
		return false
	}
	minf := mdia.kid("minf")
	if minf == nil {
		return false
	}
	stbl := minf.kid("stbl")
	if stbl == nil {
		return false
	}
	stsd := stbl.kid("stsd")
	if stsd == nil || len(stsd.kids) == 0 {
		return false
	}
	entry := stsd.kids[0]
	switch entry.typ {
	case "avc1":
		entry.keep("avcC")
	case "hev1", "hvc1":
		entry.keep("hvcC")
	default:
		return false
	}
	if len(entry.kids) != 1 {
		return false
	}
	stsd.kids = stsd.kids[:1]
	stsd.head = append([]byte(nil), stsd.head...)
	binary.BigEndian.PutUint32(stsd.head[4:], 1)

	// pmp4 wants an edit list, though it does not use it.
	if edts := trak.kid("edts"); edts == nil || edts.kid("elst") == nil {
		trak.kids = append(trak.kids, &box{typ: "edts", kids: []*box{{typ: "elst", head: make([]byte, 8)}}})
	}
	trak.kid("edts").keep("elst")
	trak.keep("tkhd", "edts", "mdia")
	mdia.keep("mdhd", "hdlr", "minf")
	minf.keep("vmhd", "stbl")

	// pmp4 reads the version 1 field of ctts only; the bytes are the same.
	if ctts := stbl.kid("ctts"); ctts != nil && len(ctts.head) > 0 {
		ctts.head = append([]byte(nil), ctts.head...)
		ctts.head[0] = 1
	}
	stbl.keep("stsd", "stts", "stss", "ctts", "stsc", "stsz", "stco", "co64")
	return true
}

// moveChunks adds delta to every chunk offset, turning co64 into stco.
func moveChunks(stbl *box, delta uint64) error {
	for _, k := range stbl.kids {
		var offs []uint64
		switch k.typ {
		case "stco", "co64":
			width := 4
			if k.typ == "co64" {
				width = 8
			}
			if len(k.head) < 8 {
				return fmt.Errorf("truncated %s", k.typ)
			}
			n := int(binary.BigEndian.Uint32(k.head[4:]))
			if len(k.head) < 8+n*width {
				return fmt.Errorf("truncated %s", k.typ)
			}
			for i := range n {
				p := k.head[8+i*width:]
				if width == 4 {
					offs = append(offs, uint64(binary.BigEndian.Uint32(p)))
				} else {
					offs = append(offs, binary.BigEndian.Uint64(p))
				}
			}
		default:
			continue
		}
		head := make([]byte, 8, 8+4*len(offs))
		binary.BigEndian.PutUint32(head[4:], uint32(len(offs)))
		for _, o := range offs {
			o += delta
			if o > 0xffffffff {
				return errors.New("file too large")
			}
			head = binary.BigEndian.AppendUint32(head, uint32(o))
		}
		k.typ, k.head = "stco", head
		return nil
	}
	return errors.New("no chunk offsets")
}

// normalizeMP4 returns a file with the same video that pmp4 can read.
func normalizeMP4(raw []byte) ([]byte, error) {
	top, err := splitBoxes(raw)
	if err != nil {
		return nil, err
	}
	ftyp := &box{typ: "ftyp", head: []byte("isom\x00\x00\x02\x00isomiso2avc1mp41")}
	var moov *box
	for _, b := range top {
		switch b.typ {
		case "ftyp":
			ftyp = b
		case "moov":
			moov = b
		}
	}
	if moov == nil {
		return nil, errors.New("no moov box")
	}
	if moov.kid("mvex") != nil {
		return nil, errors.New("fragmented MP4 is not supported")
	}
	var trak *box
	for _, k := range moov.kids {
		if k.typ == "trak" && videoTrack(k) {
			trak = k
			break
		}
	}
	if trak == nil {
		return nil, errors.New("no H.264 or H.265 track")
	}
	if moov.kid("mvhd") == nil {
		return nil, errors.New("no mvhd box")
	}
	moov.kids = []*box{moov.kid("mvhd"), trak}

	// Turn co64 into stco first; then the header's size is final.
	const mdatHeader = 16 // with a 64-bit size
	stbl := trak.kid("mdia").kid("minf").kid("stbl")
	if err := moveChunks(stbl, 0); err != nil {
		return nil, err
	}
	delta := uint64(ftyp.size() + moov.size() + mdatHeader)
	if err := moveChunks(stbl, delta); err != nil {
		return nil, err
	}

	out := make([]byte, 0, int(delta)+len(raw))
	out = ftyp.appendTo(out)
	out = moov.appendTo(out)
	out = binary.BigEndian.AppendUint32(out, 1)
	out = append(out, "mdat"...)
	out = binary.BigEndian.AppendUint64(out, uint64(mdatHeader+len(raw)))
	out = append(out, raw...)
	if uint64(len(out))-uint64(len(raw)) != delta {
		return nil, errors.New("internal error: header size changed")
	}
	return out, nil
}
