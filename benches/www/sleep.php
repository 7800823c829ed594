<?php
// waits without using the CPU, like a script waiting for its database (the "sleep" workload;
// ?ms=n, default 5)
usleep((int)($_GET['ms'] ?? 5) * 1000);
echo "slept\n";
