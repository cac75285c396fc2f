# Scenario 4: server VmRSS over time (sampled every 0.5 s), per server.
#   gnuplot -e "rundir='RUN_DIR'; outdir='perf/results'" perf/plot/rss.gp
files = system("ls ".rundir."/s4.*.rss 2>/dev/null")
if (words(files) == 0) { print "rss.gp: no scenario 4 samples"; exit }
set terminal pngcairo size 900,540 noenhanced font ",11"
set output outdir."/rss_s4.png"
set title "Scenario 4: server VmRSS, 1,000 healthy + 10 stalled subscribers"
set xlabel "seconds since sampling started (0.5 s after the server listened)"
set ylabel "VmRSS, MB"
set grid
set key bottom right
label(f) = system("basename ".f." .rss | cut -d. -f3")
# same colour per server in every plot: tickfand 2, go-peer 3
colour(f) = label(f) eq "tickfand" ? 2 : 3
plot for [f in files] f using 1:($2 / 1024.0) with lines lw 2 lt colour(f) title label(f)
