package sim

import (
	"fmt"
	"testing"
	"time"
)

func BenchmarkRender(b *testing.B) {
	for _, size := range [][2]int{{160, 120}, {320, 240}, {640, 480}} {
		s := newScene("cam")
		b.Run(fmt.Sprintf("%dx%d", size[0], size[1]), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s.render(time.Now(), i%2 == 0, size[0], size[1], 70)
			}
		})
	}
}
