// snapshot_target is the Go twin of target-runtime/examples/bench_target.rs, for the
// snapshot benchmark (benches/snapshot.rs, benches/snapshot-vs-go.sh): N goroutines
// parked on one channel 8 distinct functions deep, a probe goroutine that spins on the
// clock and remembers the largest gap between two readings, and (-loaded) two busy
// goroutines per other P, yielding every ~20 µs. It takes Go's own goroutine profile,
// in process, on command.
//
// Build (offline, no module needed):
//
//	GO111MODULE=off go build -o snapshot_target benches/go/snapshot_target.go
//
// Usage: snapshot_target -tasks N [-depth 8] [-workers W] [-loaded] [-o FILE]
//
// Prints "READY <pid>" once every goroutine is parked, then answers one line per
// command line on stdin:
//
//	wake     the probe (and busy goroutines) start spinning; gap reset      -> ok
//	sleep    they stop spinning (sleep in 10 ms steps)                      -> ok
//	reset    forget the largest gap                                        -> ok
//	gap?     the largest gap in ns since the last reset                    -> N
//	profile  reset; pprof.Lookup("goroutine").WriteTo(FILE, 0); read the gap
//	         -> "<WriteTo latency ns> <largest gap ns> <bytes written>"
//	exit     exit
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

var (
	maxGap    int64 // largest gap since the last reset, ns
	resetReq  int32 // set by reset; the probe clears maxGap and restarts its clock
	resetSeen int32 // the probe has seen the last reset
	awake     int32 // the probe and busy goroutines spin
	start     = time.Now()
)

//go:noinline
func park8(ch chan uint32, depth int) uint32 { return <-ch }

//go:noinline
func park7(ch chan uint32, depth int) uint32 {
	if depth <= 1 {
		return <-ch
	}
	return park8(ch, depth-1) + 1
}

//go:noinline
func park6(ch chan uint32, depth int) uint32 {
	if depth <= 1 {
		return <-ch
	}
	return park7(ch, depth-1) + 1
}

//go:noinline
func park5(ch chan uint32, depth int) uint32 {
	if depth <= 1 {
		return <-ch
	}
	return park6(ch, depth-1) + 1
}

//go:noinline
func park4(ch chan uint32, depth int) uint32 {
	if depth <= 1 {
		return <-ch
	}
	return park5(ch, depth-1) + 1
}

//go:noinline
func park3(ch chan uint32, depth int) uint32 {
	if depth <= 1 {
		return <-ch
	}
	return park4(ch, depth-1) + 1
}

//go:noinline
func park2(ch chan uint32, depth int) uint32 {
	if depth <= 1 {
		return <-ch
	}
	return park3(ch, depth-1) + 1
}

//go:noinline
func park1(ch chan uint32, depth int, wg *sync.WaitGroup) uint32 {
	wg.Done()
	if depth <= 1 {
		return <-ch
	}
	return park2(ch, depth-1) + 1
}

func now() int64 { return int64(time.Since(start)) }

//go:noinline
func probe() {
	for {
		if atomic.LoadInt32(&awake) == 0 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		last := now()
		atomic.StoreInt64(&maxGap, 0)
		atomic.StoreInt32(&resetReq, 0)
		atomic.StoreInt32(&resetSeen, 1)
		var max int64
		for atomic.LoadInt32(&awake) != 0 {
			t := now()
			gap := t - last
			last = t
			if gap > max {
				max = gap
				atomic.StoreInt64(&maxGap, max)
			}
			if atomic.LoadInt32(&resetReq) != 0 {
				break
			}
		}
	}
}

//go:noinline
func busyLeaf() {
	x := uint64(0)
	for {
		if atomic.LoadInt32(&awake) == 0 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		t := now()
		for now()-t < 20000 {
			for i := 0; i < 100; i++ {
				x = x*6364136223846793005 + 1
			}
		}
		runtime.Gosched()
	}
}

var sink uint64

func reset() {
	atomic.StoreInt32(&resetSeen, 0)
	atomic.StoreInt32(&resetReq, 1)
	t := time.Now()
	for atomic.LoadInt32(&awake) != 0 && atomic.LoadInt32(&resetSeen) == 0 && time.Since(t) < time.Second {
		runtime.Gosched()
	}
}

func main() {
	tasks := flag.Int("tasks", 1000, "parked goroutines")
	depth := flag.Int("depth", 8, "frames of park1..park8 (1-8)")
	workers := flag.Int("workers", 2, "GOMAXPROCS")
	loaded := flag.Bool("loaded", false, "two busy goroutines per other P")
	out := flag.String("o", os.TempDir()+"/snapshot_target.pprof", "profile file")
	flag.Parse()
	if *depth < 1 || *depth > 8 {
		fmt.Fprintln(os.Stderr, "snapshot_target: -depth 1..8")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(*workers)

	ch := make(chan uint32)
	var wg sync.WaitGroup
	wg.Add(*tasks)
	for i := 0; i < *tasks; i++ {
		go park1(ch, *depth, &wg)
	}
	wg.Wait()
	// wg.Done runs just before the receive: give the last ones time to park.
	time.Sleep(100 * time.Millisecond)
	go probe()
	if *loaded {
		n := 2 * (*workers - 1)
		if n < 2 {
			n = 2
		}
		for i := 0; i < n; i++ {
			go busyLeaf()
		}
	}
	fmt.Printf("READY %d\n", os.Getpid())

	in := bufio.NewScanner(os.Stdin)
	w := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		var reply string
		switch in.Text() {
		case "wake":
			atomic.StoreInt32(&awake, 1)
			reset()
			reply = "ok"
		case "sleep":
			atomic.StoreInt32(&awake, 0)
			reply = "ok"
		case "reset":
			reset()
			reply = "ok"
		case "gap?":
			reply = fmt.Sprint(atomic.LoadInt64(&maxGap))
		case "profile":
			reset()
			f, err := os.Create(*out)
			if err != nil {
				reply = "error: " + err.Error()
				break
			}
			t := time.Now()
			err = pprof.Lookup("goroutine").WriteTo(f, 0)
			if err == nil {
				err = f.Close()
			}
			lat := time.Since(t)
			gap := atomic.LoadInt64(&maxGap)
			st, _ := os.Stat(*out)
			if err != nil {
				reply = "error: " + err.Error()
			} else {
				reply = fmt.Sprintf("%d %d %d", lat.Nanoseconds(), gap, st.Size())
			}
		case "exit":
			os.Exit(0)
		default:
			reply = fmt.Sprintf("error: unknown command %q", in.Text())
		}
		fmt.Fprintln(w, reply)
		w.Flush()
	}
	runtime.KeepAlive(ch)
	_ = sink
}
