package sim

import (
	"bytes"
	"image"
	"image/draw"
	"image/jpeg"
	"math"
	"sync"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// scene renders a simulated camera's picture: a room, the time, the
// camera's name and, while an intruder is present, a figure crossing the
// room. A frame is a pure function of its time and the intruder's presence,
// so the camera can keep its pre-roll as a list of instants and render them
// at whatever size a stream asks for.
type scene struct {
	name string

	mu    sync.Mutex
	rooms map[[2]int]*image.YCbCr // background per size
}

func newScene(name string) *scene { return &scene{name: name, rooms: map[[2]int]*image.YCbCr{}} }

// room returns the static background at a size.
func (s *scene) room(w, h int) *image.YCbCr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.rooms[[2]int{w, h}]; ok {
		return r
	}
	r := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	floor := h * 2 / 3
	for y := range h {
		for x := range w {
			v := 90 + 60*y/h // wall
			if y > floor {
				v = 70 + ((x/16+y/16)%2)*25 // tiled floor
			}
			if x > w/8 && x < w/8+w/6 && y > h/5 && y < floor { // a door
				v = 50
			}
			r.Y[y*r.YStride+x] = uint8(v)
		}
	}
	for i := range r.Cb {
		r.Cb[i], r.Cr[i] = 128, 128
	}
	s.rooms[[2]int{w, h}] = r
	return r
}

// render draws the frame at time t and encodes it as JPEG.
func (s *scene) render(t time.Time, intruder bool, w, h, quality int) []byte {
	bg := s.room(w, h)
	img := &image.YCbCr{
		Y: append([]byte(nil), bg.Y...), Cb: append([]byte(nil), bg.Cb...), Cr: append([]byte(nil), bg.Cr...),
		YStride: bg.YStride, CStride: bg.CStride, SubsampleRatio: bg.SubsampleRatio, Rect: bg.Rect,
	}
	if intruder {
		// A figure walking back and forth over 6 s.
		phase := math.Mod(float64(t.UnixMilli())/6000, 1)
		cx := int(float64(w) * (0.15 + 0.7*math.Abs(2*phase-1)))
		floor := h * 2 / 3
		bw, bh := w/14, h/3
		fill := func(x0, y0, x1, y1 int, luma, cr uint8) {
			for y := max(y0, 0); y < min(y1, h); y++ {
				for x := max(x0, 0); x < min(x1, w); x++ {
					img.Y[y*img.YStride+x] = luma
					img.Cr[(y/2)*img.CStride+x/2] = cr
				}
			}
		}
		fill(cx-bw/2, floor-bh, cx+bw/2, floor+bh/6, 40, 200) // body, reddish
		r := bw * 2 / 3
		for y := -r; y < r; y++ { // head
			for x := -r; x < r; x++ {
				if x*x+y*y < r*r {
					px, py := cx+x, floor-bh-r+y
					if px >= 0 && px < w && py >= 0 && py < h {
						img.Y[py*img.YStride+px] = 200
					}
				}
			}
		}
	}
	gray := &image.Gray{Pix: img.Y, Stride: img.YStride, Rect: img.Rect}
	label := t.Format("2006-01-02 15:04:05.000") + "  " + s.name
	if intruder {
		label += "  MOTION"
	}
	draw.Draw(gray, image.Rect(4, 4, min(w, 8+7*len(label)), 22), image.Black, image.Point{}, draw.Src)
	d := font.Drawer{Dst: gray, Src: image.White, Face: basicfont.Face7x13, Dot: fixed.P(6, 18)}
	d.DrawString(label)
	var b bytes.Buffer
	jpeg.Encode(&b, img, &jpeg.Options{Quality: quality})
	return b.Bytes()
}
