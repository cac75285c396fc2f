# Scenario 1: delivered messages/s against offered deliveries/s, per server.
#   gnuplot -e "rundir='RUN_DIR'; outdir='perf/results'" perf/plot/rate.gp
set terminal pngcairo size 900,540 noenhanced font ",11"
set output outdir."/rate_s1.png"
set title "Scenario 1: fanout, 1,000 subscribers over 8 connections"
set xlabel "offered deliveries/s (ticks/s x 1,000)"
set ylabel "delivered msgs/s"
set grid
set key top left
set format x "%.0s%c"
set format y "%.0s%c"
f = rundir."/s1_rate.dat"
ncol = int(system("awk '/^#/ {print NF - 2; exit}' ".f))
names = system("awk '/^#/ {for (i = 3; i <= NF; i++) printf \"%s \", $i; exit}' ".f)
plot f using 1:1 with lines dashtype 2 lc rgb "gray" title "offered", \
     for [i=1:ncol] f using 1:(column(i+1)) with linespoints lw 2 pt 7 lt (word(names, i) eq "tickfand" ? 2 : 3) title word(names, i)
