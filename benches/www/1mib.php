<?php
// 1 MiB response
header('Content-Type: application/octet-stream');
echo str_repeat('0123456789abcdef', 65536);
