// A client of the Smarty persons API as published clients are written: the base URL is a constant of the real
// service, the transport is net/http's default (it honours HTTPS_PROXY, and SSL_CERT_FILE for its trust store).
// Nothing here knows about the emulator.
//
// Usage: goclient PHOTO_TO_SET PHOTO_TO_RECOGNIZE
// Prints one envelope per call (set, recognize, delete, truncate), one line each, as the server sent it.
package main

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

const baseURL = "https://smarty.mail.ru/api/v1"

func call(client *http.Client, method, meta string, photos map[string]string) ([]byte, error) {
	var body bytes.Buffer
	form := multipart.NewWriter(&body)
	for name, path := range photos {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		part, err := form.CreateFormFile(name, filepath.Base(path))
		if err != nil {
			return nil, err
		}
		part.Write(data)
	}
	if err := form.WriteField("meta", meta); err != nil {
		return nil, err
	}
	form.Close()
	query := url.Values{"oauth_token": {"go-client-token"}, "oauth_provider": {"mcs"}}
	endpoint := baseURL + "/persons/" + method + "?" + query.Encode()
	response, err := client.Post(endpoint, form.FormDataContentType(), &body)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", method, response.StatusCode)
	}
	return io.ReadAll(response.Body)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: goclient PHOTO_TO_SET PHOTO_TO_RECOGNIZE")
		os.Exit(2)
	}
	client := &http.Client{Timeout: 60 * time.Second}
	steps := []struct {
		method, meta string
		photos       map[string]string
	}{
		{"set", `{"space":"3","images":[{"name":"photo","person_id":7}]}`, map[string]string{"photo": os.Args[1]}},
		{"recognize", `{"space":"3","images":[{"name":"photo"}]}`, map[string]string{"photo": os.Args[2]}},
		{"delete", `{"space":"3","images":[{"name":"gone","person_id":7}]}`, nil},
		{"truncate", `{"space":"3"}`, nil},
	}
	for _, step := range steps {
		answer, err := call(client, step.method, step.meta, step.photos)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(string(answer))
	}
}
