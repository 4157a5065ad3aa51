module smartyclient

go 1.19
