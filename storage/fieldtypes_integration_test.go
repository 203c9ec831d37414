package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

func TestFieldTypesFromInfluxDB(t *testing.T) {
	srv := influxtest.Start(t)
	s := openInflux(t, srv.URL(), "schema/autogen", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	types, err := s.FieldTypes(ctx)
	if err != nil || len(types) != 0 {
		t.Fatalf("empty database: %v, %v", types, err)
	}
	mustWrite(t, s, "env,device_id=a t=21.5,n=3i,on=true,s=\"x\" 1\npower,device_id=a kwh=7i 1\n")
	types, err = s.FieldTypes(ctx)
	if want := "map[env:map[n:integer on:boolean s:string t:float] power:map[kwh:integer]]"; err != nil || fmt.Sprint(types) != want {
		t.Fatalf("got %v, %v; want %s", types, err, want)
	}
}
